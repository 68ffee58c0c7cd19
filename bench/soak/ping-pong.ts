/**
 * The soak: one running guest migrated back and forth between two agents of
 * their hosts (`livemig run --incoming --stay --paused`, separate processes),
 * through their control sockets, as `livemig migrate --keep-paused` does. Each
 * migration is checked by the oracle: both memories fingerprinted anew at the
 * switch-over (source in postmigrate, destination held paused) and compared;
 * then the source lets the guest go and the destination runs it. After each, the
 * resident memory and open file descriptors of both agents are recorded at a
 * quiet point (sampleQuiet), with the main thread's V8 heap as evidence. At the
 * end the agents stop, and nothing may be left: no socket files, nothing in
 * their TMPDIR, no network namespace more than before.
 */
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { mkdirSync, readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { controlRequest } from '../../src/guest/control/client.ts';
import { compareFingerprints, type Fingerprint } from '../../src/guest/fingerprint.ts';
import type { GuestStatus } from '../../src/guest/guest.ts';
import type { MigrationResult } from '../../src/migrate/result.ts';
import { makeDiskImage } from '../../src/demo/disk-image.ts';
import { LIVEMIG, rss } from '../fuzz/targets.ts';

export interface SoakOptions {
  dir: string;
  migrations: number;
  memoryBytes?: number;
  workload?: string;
  onMigration?: (m: SoakMigration) => void;
}

export interface AgentSample {
  rssBytes: number;
  fds: number;
  /** The main thread's V8 heap at the same point, as the agent reports it, and memory outside it that its objects hold (guest memory's SharedArrayBuffers among them). */
  heapTotalBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
}

export interface SoakMigration {
  index: number;
  from: string;
  to: string;
  verified: boolean;
  oracleEqual: boolean;
  totalTimeMs: number;
  downtimeMs: number;
  agents: Record<'A' | 'B', AgentSample>;
}

export interface SoakResult {
  migrations: SoakMigration[];
  /** Whatever is left after both agents stopped; all empty when clean. */
  left: { socketFiles: string[]; tmpFiles: string[]; netns: string[]; exitCodes: Record<string, number | null> };
}

interface Agent {
  name: string;
  pid: number;
  control: string;
  address: string;
  exited: Promise<number | null>;
  stderr: () => string;
}

const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const netns = () => {
  try {
    return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    return [];
  }
};

async function spawnLivemig(name: string, args: string[], tmp: string): Promise<Agent & { info: Record<string, string> }> {
  const child = spawn(process.execPath, [LIVEMIG, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp } });
  const orphan = () => child.kill('SIGKILL');
  process.once('exit', orphan);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-20_000)));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => (process.off('exit', orphan), r(code))));
  const line = await Promise.race([
    once(createInterface({ input: child.stdout! }), 'line').then(([l]) => l as string),
    exited.then((c) => { throw new Error(`agent ${name} exited (${c}): ${stderr.trim()}`); }),
  ]);
  const info = JSON.parse(line) as Record<string, string>;
  return { name, pid: child.pid!, control: info.control, address: info.incoming, exited, stderr: () => stderr, info };
}

interface AgentStatus {
  idle?: boolean;
  process: { heapTotalBytes: number; heapUsedBytes: number; externalBytes: number };
}

/** Control connections the agent has open (the accepted end of a Unix socket carries the socket's path). */
function controlConnections(a: Agent): number {
  return readFileSync('/proc/net/unix', 'utf8').split('\n').filter((l) => l.endsWith(` ${a.control}`) && l.split(/\s+/)[5] === '03').length;
}

/**
 * The agent's figures at a quiet point: it says nothing is under way (no migration,
 * no guest being let go, no attempt being cleaned up, threads booted ahead started)
 * and it has closed every control connection, ours included. Sampled any sooner,
 * threads that boot or stop and connections that close make the figures jump.
 */
async function sampleQuiet(a: Agent): Promise<AgentSample> {
  const deadline = Date.now() + 60_000;
  let status: AgentStatus;
  while (!(status = await controlRequest<AgentStatus>(a.control, 'status')).idle) {
    if (Date.now() > deadline) throw new Error(`agent ${a.name} did not become idle`);
    await new Promise((r) => setTimeout(r, 20));
  }
  while (controlConnections(a) > 0) {
    if (Date.now() > deadline) throw new Error(`agent ${a.name} kept a control connection open`);
    await new Promise((r) => setTimeout(r, 5));
  }
  const { heapTotalBytes, heapUsedBytes, externalBytes } = status.process;
  return { rssBytes: rss(a.pid) ?? 0, fds: fdCount(a.pid), heapTotalBytes, heapUsedBytes, externalBytes };
}

/** Waits until the guest behind `control` has run `steps` more steps (a count, not a time). */
async function runSteps(control: string, steps: number): Promise<void> {
  const from = (await controlRequest<GuestStatus>(control, 'status')).steps;
  const deadline = Date.now() + 120_000;
  while ((await controlRequest<GuestStatus>(control, 'status')).steps < from + steps) {
    if (Date.now() > deadline) throw new Error(`the guest behind ${control} did not run ${steps} steps`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until an agent that let its guest go listens again. */
async function listening(a: Agent): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const s = await controlRequest<{ state?: string; incoming?: { phase: string } }>(a.control, 'status');
    if (s.state === 'incoming' && s.incoming?.phase === 'listening') return;
    if (Date.now() > deadline) throw new Error(`agent ${a.name} did not listen again`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One migration from `src` (its control socket) to agent `dst`, checked by the oracle. */
async function migrateOnce(src: { name: string; control: string }, dst: Agent): Promise<Pick<SoakMigration, 'verified' | 'oracleEqual' | 'totalTimeMs' | 'downtimeMs'>> {
  await runSteps(src.control, 5);
  const args = { to: dst.address, strategy: 'p2b', maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle', keepPaused: true };
  const r = await controlRequest<MigrationResult>(src.control, 'migrate', { migrate: args }, 600_000);
  const [a, b] = await Promise.all([controlRequest<Fingerprint>(src.control, 'fingerprint'), controlRequest<Fingerprint>(dst.control, 'fingerprint')]);
  const oracle = compareFingerprints(a, b);
  await controlRequest(src.control, 'stop');
  await controlRequest(dst.control, 'resume');
  return { verified: r.verified, oracleEqual: oracle.equal, totalTimeMs: r.totalTimeMs, downtimeMs: r.downtimeMs };
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const memory = String(o.memoryBytes ?? 32 << 20);
  const tmp = join(o.dir, 'tmp');
  mkdirSync(tmp, { recursive: true });
  const disk = join(o.dir, 'disk.img');
  makeDiskImage(disk, 64 << 20);
  const netnsBefore = netns();
  const agentArgs = (n: string) => ['run', '--incoming', 'tcp://127.0.0.1:0', '--control', join(o.dir, `${n}.sock`), '--disk', disk, '--memory', memory, '--paused', '--stay', '--state-dir', join(o.dir, `state-${n}`)];
  const A = await spawnLivemig('A', agentArgs('A'), tmp);
  const B = await spawnLivemig('B', agentArgs('B'), tmp);
  const migrations: SoakMigration[] = [];
  try {
    // The guest starts in a process of its own and moves into agent A; from there it plays ping-pong.
    const first = await spawnLivemig('guest', ['run', '--name', 'soak', '--memory', memory, '--disk', disk, '--workload', o.workload ?? 'mixed', '--control', join(o.dir, 'guest.sock'), '--state-dir', join(o.dir, 'state-guest')], tmp);
    await migrateOnce(first, A);
    if ((await first.exited) !== 0) throw new Error(`the first guest process failed: ${first.stderr()}`);
    for (let i = 1; i <= o.migrations; i++) {
      const [src, dst] = i % 2 ? [A, B] : [B, A];
      const m = await migrateOnce(src, dst);
      await listening(src);
      const agents = { A: await sampleQuiet(A), B: await sampleQuiet(B) };
      const rec: SoakMigration = { index: i, from: src.name, to: dst.name, ...m, agents };
      migrations.push(rec);
      o.onMigration?.(rec);
    }
  } finally {
    for (const a of [A, B]) process.kill(a.pid, 'SIGTERM');
  }
  const exitCodes = { A: await A.exited, B: await B.exited };
  const socketFiles = readdirSync(o.dir).filter((f) => f.endsWith('.sock') && existsSync(join(o.dir, f)));
  const tmpFiles = readdirSync(tmp).filter((f) => !f.startsWith('tsx-'));
  const netnsAfter = netns().filter((n) => !netnsBefore.includes(n));
  return { migrations, left: { socketFiles, tmpFiles, netns: netnsAfter, exitCodes } };
}

/**
 * Each agent's figure after migration n against its figure after the reference
 * migration in which it had the same role (the agents swap roles every migration):
 * the largest relative deviation over the run.
 */
export function drift(ms: SoakMigration[], reference: number, key: keyof AgentSample): Record<'A' | 'B', number> {
  const out = { A: 0, B: 0 };
  for (const agent of ['A', 'B'] as const) {
    for (const m of ms.filter((x) => x.index > reference)) {
      const ref = ms.find((x) => x.index === (m.index % 2 === reference % 2 ? reference : reference + 1));
      if (!ref) continue;
      const d = Math.abs(m.agents[agent][key] - ref.agents[agent][key]) / ref.agents[agent][key];
      out[agent] = Math.max(out[agent], d);
    }
  }
  return out;
}

/**
 * The same comparison on the median of each agent's last `last` figures in the role
 * it had at the reference: what the agent settled at, without one sample's noise
 * (a garbage collection just before or after the sample, a worker's files closing).
 */
export function settledDrift(ms: SoakMigration[], reference: number, key: keyof AgentSample, last = 10): Record<'A' | 'B', number> {
  const out = { A: 0, B: 0 };
  for (const agent of ['A', 'B'] as const) {
    for (const ref of ms.filter((x) => x.index === reference || x.index === reference + 1)) {
      const same = ms.filter((x) => x.index > reference + 1 && x.index % 2 === ref.index % 2).slice(-last).map((x) => x.agents[agent][key]).sort((a, b) => a - b);
      if (!same.length) continue;
      const median = same[Math.floor(same.length / 2)];
      out[agent] = Math.max(out[agent], Math.abs(median - ref.agents[agent][key]) / ref.agents[agent][key]);
    }
  }
  return out;
}
