/**
 * The processes a fuzzer attacks, started the way a user starts them: a
 * destination waiting for a guest (`livemig run --incoming`) and the NBD server
 * (`livemig nbd serve`), each on loopback TCP with its own TMPDIR so anything it
 * leaves behind can be found. Their resident memory is sampled while they run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const REPO = new URL('../..', import.meta.url).pathname;
export const LIVEMIG = join(REPO, 'bin/livemig.js');

export interface Target {
  host: string;
  port: number;
  /** Processes whose memory counts (the server's workers, or the one process). */
  pids: number[];
  process: ChildProcess;
  /** The control socket of a migration destination. */
  control?: string;
  /** Resolves with the exit code (null: killed by a signal, named in `signal`). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
  /** Lines of its pino log (--log-level) so far, by message and by `message/code`. */
  logCounts: () => Record<string, number>;
  stop: () => Promise<void>;
}

/** Resident memory of a process in bytes (VmRSS), or null once it is gone. */
export function rss(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Samples the summed RSS of the target's processes every `everyMs`; max() is the highest seen. */
export class RssSampler {
  private timer: NodeJS.Timeout;
  maxBytes = 0;
  samples = 0;
  constructor(private readonly pids: () => number[], everyMs = 100) {
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
    this.sample();
  }
  sample(): number {
    const total = this.pids().reduce((a, p) => a + (rss(p) ?? 0), 0);
    this.maxBytes = Math.max(this.maxBytes, total);
    this.samples++;
    return total;
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

/** Counts the pino lines of a stream by message, and by message and error code. */
function countLog(stream: NodeJS.ReadableStream): () => Record<string, number> {
  const counts: Record<string, number> = {};
  const add = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
  createInterface({ input: stream }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    try {
      const { msg, code } = JSON.parse(line) as { msg?: string; code?: string };
      if (!msg) return;
      add(msg);
      if (code) add(`${msg}/${code}`);
    } catch { /* not a log line */ }
  });
  return () => ({ ...counts });
}

type Spawned = { child: ChildProcess; info: Record<string, unknown>; exited: Target['exited']; stderr: () => string; logCounts: () => Record<string, number> };

async function spawnJson(args: string[], tmp: string): Promise<Spawned> {
  mkdirSync(tmp, { recursive: true });
  const child = spawn(process.execPath, [LIVEMIG, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp } });
  const orphan = () => child.kill('SIGKILL'); // a bench stopped halfway leaves no target behind
  process.once('exit', orphan);
  child.once('exit', () => process.off('exit', orphan));
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-20_000)));
  const logCounts = countLog(child.stderr!);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const line = await Promise.race([
    once(createInterface({ input: child.stdout! }), 'line').then(([l]) => l as string),
    exited.then((e) => { throw new Error(`livemig ${args[0]} exited (${e.code ?? e.signal}) before listening: ${stderr.trim()}`); }),
  ]);
  return { child, info: JSON.parse(line), exited, stderr: () => stderr, logCounts };
}

function stopper(child: ChildProcess, exited: Target['exited']): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };
}

/** `livemig run --incoming` on loopback, holding an arrived guest paused (so the oracle can compare it). */
export async function startDestination(dir: string, disk: string, memoryBytes: number, extra: string[] = []): Promise<Target> {
  const control = join(dir, 'destination.sock');
  const { child, info, exited, stderr, logCounts } = await spawnJson(
    ['run', '--incoming', 'tcp://127.0.0.1:0', '--control', control, '--disk', disk, '--memory', String(memoryBytes), '--paused', '--json', ...extra], join(dir, 'tmp'));
  const port = Number(new URL(info.incoming as string).port);
  return { host: '127.0.0.1', port, pids: [child.pid!], process: child, control, exited, stderr, logCounts, stop: stopper(child, exited) };
}

/** `livemig nbd serve` on loopback with the given exports (e.g. `--memory-export mem=64MiB`), one process. */
export async function startNbdServer(dir: string, exportArgs: string[], extra: string[] = []): Promise<Target> {
  const { child, info, exited, stderr, logCounts } = await spawnJson(['nbd', 'serve', '--listen', 'tcp://127.0.0.1:0', '--json', '--workers', '1', ...exportArgs, ...extra], join(dir, 'tmp'));
  const port = Number(new URL((info.listening as string).replace(/^tcp:/, 'http:')).port);
  const pids = (info.pids as number[] | undefined) ?? [child.pid!];
  return { host: '127.0.0.1', port, pids: [...new Set([child.pid!, ...pids])], process: child, exited, stderr, logCounts, stop: stopper(child, exited) };
}
