/**
 * One whole migration on this machine, as it runs across hosts: three processes
 * (`livemig nbd serve` over a generated disk image, a source `livemig run`, a
 * destination `livemig run --incoming`) with TCP between them, driven through
 * the control sockets. Used by `livemig demo` and the migration benchmark.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync, openSync, writeSync, closeSync, fsyncSync, readFileSync, readdirSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { controlRequest } from '../guest/control/client.ts';
import type { GuestStatus } from '../guest/guest.ts';
import type { MigrationResult, RoundStats, Strategy } from './result.ts';

const LIVEMIG = new URL('../../bin/livemig.js', import.meta.url).pathname;

export interface LocalRunOptions {
  memoryBytes: number;
  workload: string;
  strategy: Strategy;
  maxBandwidth: number;
  downtimeLimitMs: number;
  seed?: number;
  /** Steady-state work before migrating. */
  warmMs?: number;
  /** Reuse a disk image (random content) across runs. */
  diskImage?: string;
  onPhase?: (phase: string) => void;
  onRound?: (r: RoundStats) => void;
}

export const diskBytesFor = (memoryBytes: number) => Math.max(256 << 20, memoryBytes * 2);

/** Random content: every block distinct, as a real guest's data looks to the p2b map. */
export function makeDiskImage(path: string, bytes: number): string {
  const fd = openSync(path, 'w');
  const chunk = Buffer.allocUnsafe(16 << 20);
  for (let done = 0; done < bytes; done += chunk.length) writeSync(fd, randomFillSync(chunk.subarray(0, Math.min(chunk.length, bytes - done))));
  fsyncSync(fd); // else the guest's first flush (at pause, in downtime) pays for writing the whole image back
  closeSync(fd);
  return path;
}

/** CPU time (user + system, all threads) a child process has used so far, from /proc. */
function cpuMs(child: ChildProcess): number {
  try {
    const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime, stime in USER_HZ ticks
  } catch {
    return NaN;
  }
}

/** Starts a livemig process and returns it with the JSON line it prints when ready. */
async function startProcess(args: string[], children: ChildProcess[]): Promise<{ child: ChildProcess; info: Record<string, string> }> {
  const child = spawn(process.execPath, [...(process.env.LIVEMIG_PROF ? ['--cpu-prof', '--cpu-prof-dir=' + process.env.LIVEMIG_PROF] : []), LIVEMIG, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += d;
    if (process.env.LIVEMIG_TRACE) process.stderr.write(d); // phase traces of the agents
  });
  const line = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('error', () => {});
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`livemig ${args[0]} exited with ${code}: ${stderr.trim()}`)));
  });
  return { child, info: JSON.parse(line) };
}

export async function runLocalMigration(o: LocalRunOptions): Promise<MigrationResult & { destinationRunning: boolean }> {
  const dir = mkdtempSync(join(tmpdir(), 'livemig-demo-'));
  const phase = o.onPhase ?? (() => {});
  const children: ChildProcess[] = [];
  try {
    let image = o.diskImage;
    if (!image) {
      phase(`writing a ${diskBytesFor(o.memoryBytes) >> 20} MiB disk image`);
      image = makeDiskImage(join(dir, 'disk.img'), diskBytesFor(o.memoryBytes));
    }
    const nbd = await startProcess(['nbd', 'serve', '--export', `disk=${image}`, '--listen', 'tcp://127.0.0.1:0'], children);
    const disk = (nbd.info as unknown as { exports: { uri: string }[] }).exports[0].uri;
    const dstControl = join(dir, 'destination.sock');
    const dst = await startProcess(['run', '--incoming', 'tcp://127.0.0.1:0', '--memory', String(o.memoryBytes), '--control', dstControl, '--state-dir', join(dir, 'destination')], children);
    phase('starting the source guest');
    const srcControl = join(dir, 'source.sock');
    await startProcess(['run', '--name', 'demo', '--memory', String(o.memoryBytes), '--disk', disk, '--workload', o.workload,
      '--seed', String(o.seed ?? 1), '--control', srcControl, '--state-dir', join(dir, 'source')], children);
    for (;;) {
      const s = await controlRequest<GuestStatus>(srcControl, 'status');
      if (s.error) throw new Error(`source guest failed: ${s.error.message}`);
      if (s.progress.phase === 'steady') break;
      phase(`warming up: ${s.p2b.mappedPages} of ${s.p2b.pages} pages mapped`);
      await delay(100);
    }
    await delay(o.warmMs ?? 1000);

    phase(`migrating with ${o.strategy}`);
    let seen = 0;
    const ticker = setInterval(async () => {
      const s = await controlRequest<{ migration?: { rounds: number; lastRound?: RoundStats } }>(srcControl, 'status').catch(() => null);
      const m = s?.migration;
      if (m?.lastRound && m.rounds > seen) {
        seen = m.rounds;
        o.onRound?.(m.lastRound);
      }
    }, 100);
    let result: MigrationResult;
    const cpu0 = children.map(cpuMs);
    try {
      result = await controlRequest<MigrationResult>(srcControl, 'migrate', {
        migrate: { to: dst.info.incoming, strategy: o.strategy, maxBandwidth: o.maxBandwidth, downtimeLimitMs: o.downtimeLimitMs, maxRounds: 30, converge: 'throttle' },
      }, 600_000);
    } finally {
      clearInterval(ticker);
    }
    const cpu = children.map((c, i) => cpuMs(c) - cpu0[i]);
    if (process.env.LIVEMIG_TRACE) console.error(`[cpu] nbd ${cpu[0]} ms, destination ${cpu[1]} ms, source ${cpu[2]} ms`);
    if (process.env.LIVEMIG_TRACE) {
      for (const [i, c] of children.entries()) {
        const tasks = readdirSync(`/proc/${c.pid}/task`).map((t) => {
          const st = readFileSync(`/proc/${c.pid}/task/${t}/stat`, 'utf8');
          const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
          return `${st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'))}:${(Number(f[11]) + Number(f[12])) * 10}`;
        });
        console.error(`[cpu] ${['nbd', 'destination', 'source'][i]} threads ${tasks.filter((t) => !t.endsWith(':0')).join(' ')}`);
      }
    }
    await delay(200);
    const d = await controlRequest<GuestStatus>(dstControl, 'status');
    await controlRequest(dstControl, 'stop').catch(() => {});
    return { ...result, destinationRunning: d.state === 'running' && !d.error };
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    rmSync(dir, { recursive: true, force: true });
  }
}
