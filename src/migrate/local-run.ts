/**
 * One whole migration on this machine, as it runs across hosts: three processes
 * (`livemig nbd serve` over a generated disk image, a source `livemig run`, a
 * destination `livemig run --incoming`) with TCP between them, driven through
 * the control sockets. Used by `livemig demo` and the migration benchmark.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync, openSync, writeSync, closeSync, fsyncSync, existsSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { controlRequest } from '../guest/control/client.ts';
import type { GuestStatus } from '../guest/guest.ts';
import type { MigrationResult, RoundStats, Strategy } from './result.ts';
import { processUsage } from '../util/process-usage.ts';
import { compareFingerprints, type Fingerprint, type FingerprintComparison } from '../guest/fingerprint.ts';

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
  /** Where each process runs and how they reach each other; default: all on loopback. */
  placement?: Placement;
  /** The NBD server for the disk: livemig's own, or nbdkit's file plugin, optionally behind its rate filter (bytes/s). */
  storage?: { server: 'livemig' | 'nbdkit'; rate?: number };
  /**
   * 'full' (default): the destination holds the guest paused and the source keeps its
   * paused copy until both memories are fingerprinted from scratch and compared (the
   * oracle, guest/fingerprint.ts); its cost is reported as checkMs, not as downtime.
   * 'digests': the production check only, the engine's keyed memory digests.
   */
  check?: 'full' | 'digests';
  /** Called once the guest is warm, just before migrating: a benchmark measures its references here. */
  beforeMigrate?: (env: { disk: (role: 'source' | 'destination') => string; wrap: Placement['wrap'] }) => Promise<void>;
}

export type Role = 'storage' | 'source' | 'destination';

/** Hosts on one machine: separate network namespaces (bench/lib/netns.ts), or plain loopback. */
export interface Placement {
  /** The command prefix that runs a process as that host, e.g. ['ip', 'netns', 'exec', 'lmb-src']. */
  wrap: (role: Role) => string[];
  /** The address each server listens on. */
  listen: { storage: string; destination: string };
  /** The storage server's address as the source and the destination reach it. */
  storageFrom: { source: string; destination: string };
}

export const LOOPBACK: Placement = {
  wrap: () => [],
  listen: { storage: '127.0.0.1', destination: '127.0.0.1' },
  storageFrom: { source: '127.0.0.1', destination: '127.0.0.1' },
};

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

/** Every process a local run has started and not yet reaped, for killAll on an interrupt. */
const live = new Set<ChildProcess>();

/** Kills whatever local runs have running (a benchmark interrupted by a signal). */
export function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
}

/** Spawns a process of a local run: killed with the run (or by killAll), its stderr kept (and echoed under LIVEMIG_TRACE). */
function spawnTracked(command: string[], stdout: 'pipe' | 'ignore', children: ChildProcess[]): { child: ChildProcess; stderr: () => string } {
  const child = spawn(command[0], command.slice(1), { stdio: ['ignore', stdout, 'pipe'] });
  children.push(child);
  live.add(child);
  child.once('exit', () => live.delete(child));
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += d;
    if (process.env.LIVEMIG_TRACE) process.stderr.write(d); // phase traces of the agents
  });
  return { child, stderr: () => stderr };
}

/** Starts a livemig process (as `wrap` says) and returns it with the JSON line it prints when ready. */
async function startProcess(wrap: string[], args: string[], children: ChildProcess[]): Promise<{ child: ChildProcess; info: Record<string, string>; stderr: () => string }> {
  const profile = process.env.LIVEMIG_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.LIVEMIG_PROF}`] : [];
  const command = [...wrap, process.execPath, ...profile, LIVEMIG, ...args, '--json'];
  const { child, stderr } = spawnTracked(command, 'pipe', children);
  const line = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('error', () => {});
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`livemig ${args[0]} exited with ${code}: ${stderr().trim()}`)));
  });
  return { child, info: JSON.parse(line), stderr };
}

/** What a process that died said last, for the error of the run it broke. */
function lastWords(name: string, p: { child: ChildProcess; stderr: () => string }): string {
  if (p.child.exitCode === null && p.child.signalCode === null) return '';
  const said = p.stderr().trim().split('\n').slice(-3).join(' | ');
  return `; the ${name} exited (${p.child.exitCode ?? p.child.signalCode})${said ? `: ${said.slice(-600)}` : ''}`;
}

/** Starts the storage server as its host; resolves with its pid and port once it accepts connections. */
async function startStorage(o: NonNullable<LocalRunOptions['storage']>, image: string, at: Placement, dir: string, children: ChildProcess[]): Promise<{ pid: number; port: number }> {
  if (o.server === 'livemig') {
    if (o.rate) throw new Error('a storage rate limit needs nbdkit (its rate filter)');
    const nbd = await startProcess(at.wrap('storage'), ['nbd', 'serve', '--export', `disk=${image}`, '--listen', `tcp://${at.listen.storage}:0`], children);
    const uri = (nbd.info as unknown as { exports: { uri: string }[] }).exports[0].uri;
    return { pid: nbd.child.pid!, port: Number(new URL(uri).port) };
  }
  // nbdkit writes its pid file once it listens: that is the readiness signal.
  const port = 20000 + Math.floor(Math.random() * 40000);
  const pidFile = join(dir, 'nbdkit.pid');
  const rate = o.rate ? ['--filter=rate'] : [];
  const command = [...at.wrap('storage'), 'nbdkit', '--foreground', '--exit-with-parent', '-P', pidFile, '-i', at.listen.storage, '-p', String(port),
    '-e', 'disk', ...rate, 'file', image, ...(o.rate ? [`rate=${Math.round(o.rate * 8)}`] : [])];
  const { child, stderr } = spawnTracked(command, 'ignore', children);
  for (let i = 0; !existsSync(pidFile); i++) {
    if (child.exitCode !== null || i > 200) throw new Error(`nbdkit did not start: ${stderr().trim() || `exit ${child.exitCode}`}`);
    await delay(25);
  }
  return { pid: child.pid!, port };
}

export type LocalMigrationResult = MigrationResult & {
  check: 'full' | 'digests';
  /** The oracle's verdict and cost ('full' only); `verified` is true only if the check it names passed. */
  oracle?: FingerprintComparison;
  checkMs: number;
  destinationRunning: boolean;
  /** The NBD server process over the migration. */
  storageServer: { cpuMs: number; peakRss: number };
};

/**
 * The oracle at the switch-over: the source (postmigrate) and the held destination
 * fingerprint their memories at once; then the source stops and the destination runs.
 */
async function oracleCheck(srcControl: string, dstControl: string): Promise<{ oracle: FingerprintComparison; checkMs: number }> {
  const t0 = performance.now();
  const [a, b] = await Promise.all([srcControl, dstControl].map((c) => controlRequest<Fingerprint>(c, 'fingerprint', {}, 600_000)));
  const oracle = compareFingerprints(a, b);
  const checkMs = Math.round(performance.now() - t0);
  await controlRequest(srcControl, 'stop').catch(() => {});
  await controlRequest(dstControl, 'resume');
  return { oracle, checkMs };
}

export async function runLocalMigration(o: LocalRunOptions): Promise<LocalMigrationResult> {
  const dir = mkdtempSync(join(tmpdir(), 'livemig-demo-'));
  const phase = o.onPhase ?? (() => {});
  const children: ChildProcess[] = [];
  try {
    let image = o.diskImage;
    if (!image) {
      phase(`writing a ${diskBytesFor(o.memoryBytes) >> 20} MiB disk image`);
      image = makeDiskImage(join(dir, 'disk.img'), diskBytesFor(o.memoryBytes));
    }
    const at = o.placement ?? LOOPBACK;
    const storage = await startStorage(o.storage ?? { server: 'livemig' }, image, at, dir, children);
    const disk = (role: 'source' | 'destination') => `nbd://${at.storageFrom[role]}:${storage.port}/disk`;
    const dstControl = join(dir, 'destination.sock');
    const full = (o.check ?? 'full') === 'full';
    const dst = await startProcess(at.wrap('destination'), ['run', '--incoming', `tcp://${at.listen.destination}:0`, '--disk', disk('destination'),
      '--memory', String(o.memoryBytes), '--control', dstControl, '--state-dir', join(dir, 'destination'), ...(full ? ['--paused'] : [])], children);
    phase('starting the source guest');
    const srcControl = join(dir, 'source.sock');
    const src = await startProcess(at.wrap('source'), ['run', '--name', 'demo', '--memory', String(o.memoryBytes), '--disk', disk('source'), '--workload', o.workload,
      '--seed', String(o.seed ?? 1), '--control', srcControl, '--state-dir', join(dir, 'source')], children);
    for (;;) {
      const s = await controlRequest<GuestStatus>(srcControl, 'status');
      if (s.error) throw new Error(`source guest failed: ${s.error.message}`);
      if (s.progress.phase === 'steady') break;
      phase(`warming up: ${s.p2b.mappedPages} of ${s.p2b.pages} pages mapped`);
      await delay(100);
    }
    await delay(o.warmMs ?? 1000);
    await o.beforeMigrate?.({ disk, wrap: at.wrap });

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
    const storageCpu0 = processUsage(storage.pid)?.cpuMs ?? 0;
    try {
      result = await controlRequest<MigrationResult>(srcControl, 'migrate', {
        migrate: { to: dst.info.incoming, strategy: o.strategy, maxBandwidth: o.maxBandwidth, downtimeLimitMs: o.downtimeLimitMs, maxRounds: 30, converge: 'throttle', keepPaused: full },
      }, 600_000);
    } catch (err) {
      await delay(100); // a crashed agent's exit lands just after the link drops
      throw new Error(`${(err as Error).message}${lastWords('destination', dst)}${lastWords('source', src)}`);
    } finally {
      clearInterval(ticker);
    }
    const storageUsage = processUsage(storage.pid);
    const checked = full ? await oracleCheck(srcControl, dstControl) : null;
    phase(checked ? `memories compared from scratch in ${checked.checkMs} ms: ${checked.oracle.equal ? 'equal' : 'DIFFERENT'}` : 'checked by memory digests');
    await delay(200);
    const d = await controlRequest<GuestStatus>(dstControl, 'status');
    await controlRequest(dstControl, 'stop').catch(() => {});
    return {
      ...result,
      verified: result.verified && (checked?.oracle.equal ?? true),
      check: full ? 'full' : 'digests',
      ...(checked ? { oracle: checked.oracle } : {}),
      checkMs: checked?.checkMs ?? 0,
      destinationRunning: d.state === 'running' && !d.error,
      storageServer: { cpuMs: (storageUsage?.cpuMs ?? NaN) - storageCpu0, peakRss: storageUsage?.peakRss ?? NaN },
    };
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    rmSync(dir, { recursive: true, force: true });
  }
}
