/**
 * One whole migration on this machine, as it runs across hosts: three processes
 * (an NBD server over a disk image, a source `livemig run`, a destination
 * `livemig run --incoming`) with TCP between them, driven through the control
 * sockets, and checked by the oracle at the switch-over. `livemig demo` runs it;
 * the migration benchmark runs it with its own placement, storage and hooks.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { controlRequest } from '../guest/control/client.ts';
import type { GuestStatus } from '../guest/guest.ts';
import { compareFingerprints, type Fingerprint, type FingerprintComparison } from '../guest/fingerprint.ts';
import type { MigrationResult, RoundStats, Strategy } from '../migrate/result.ts';
import { Hosts, type HostProcess, type Placement, type Role } from './hosts.ts';
import { diskBytesFor, makeDiskImage } from './disk-image.ts';
import { isLocalOnly } from '../wire/index.ts';
import type { HeapKind } from '../guest/workloads/heap.ts';
import type { CodecOptions } from '../migrate/source/page-codecs.ts';

/** The disk's server: its process and how each agent reaches the export. */
export interface StorageServer {
  pid: number;
  uri: (role: 'source' | 'destination') => string;
}

/** What hooks get: the run's hosts, its storage and the pid of each role's process. */
export interface RunContext {
  hosts: Hosts;
  storage: StorageServer;
  pids: Record<Role, number>;
}

export interface LocalRunOptions {
  memoryBytes: number;
  workload: string;
  strategy: Strategy;
  maxBandwidth: number;
  downtimeLimitMs: number;
  seed?: number;
  /** The heap's content and write size (`livemig run --heap --write-size`). */
  heap?: HeapKind;
  writeSize?: number;
  /** The page codecs (`livemig migrate --compress --xbzrle-cache`); defaults: the engine's. */
  codecs?: Partial<CodecOptions>;
  /** Steady-state work before migrating. */
  warmMs?: number;
  /** Reuse a disk image (random content) across runs. */
  diskImage?: string;
  /**
   * 'full' (default): the destination holds the guest paused and the source keeps its
   * paused copy until both memories are fingerprinted from scratch and compared (the
   * oracle, guest/fingerprint.ts); its cost is checkMs, never downtime.
   * 'digests': the production check only, the engine's keyed memory digests.
   */
  check?: 'full' | 'digests';
  /** Credentials for the migration link (absolute paths): TLS with x509 or a PSK, as `run --incoming` and `migrate` take them. */
  tls?: { tlsCreds?: string; tlsPsk?: string };
  /** pino level for every process; not silent: their logs are echoed on stderr. */
  logLevel?: string;
  /** Write a V8 CPU profile of every livemig process here. */
  profileDir?: string;
  onPhase?: (phase: string) => void;
  onRound?: (r: RoundStats) => void;
  /** Where each process runs and how they reach each other; default: all on loopback. */
  placement?: Placement;
  /** Serves the image; default `livemig nbd serve`. */
  storage?: (hosts: Hosts, image: string, dir: string) => Promise<StorageServer>;
  /** Once the guest is warm, just before migrating. */
  beforeMigrate?: (run: RunContext) => Promise<void> | void;
  /** Once the migration is over, before the check and before any process stops. */
  afterMigrate?: (run: RunContext) => Promise<void> | void;
}

export type LocalMigrationResult = MigrationResult & {
  check: 'full' | 'digests';
  /** The oracle's verdict ('full' only); `verified` is true only if the check it names passed. */
  oracle?: FingerprintComparison;
  checkMs: number;
};

/** `livemig nbd serve` over the image, as the storage host: one process, so its pid accounts for all its CPU. */
export async function livemigStorage(hosts: Hosts, image: string): Promise<StorageServer> {
  const at = hosts.placement;
  const nbd = await hosts.livemig('storage', ['nbd', 'serve', '--workers', '1', '--export', `disk=${image}`, '--listen', `tcp://${at.listen.storage}:0`]);
  const port = new URL((nbd.info as { exports: { uri: string }[] }).exports[0].uri).port;
  return { pid: nbd.child.pid!, uri: (role) => `nbd://${at.storageFrom[role]}:${port}/disk` };
}

async function startAgents(hosts: Hosts, o: LocalRunOptions, storage: StorageServer, dir: string): Promise<{ src: HostProcess; dst: HostProcess }> {
  const held = (o.check ?? 'full') === 'full' ? ['--paused'] : [];
  const link = [...(o.tls?.tlsCreds ? ['--tls-creds', o.tls.tlsCreds] : []), ...(o.tls?.tlsPsk ? ['--tls-psk', o.tls.tlsPsk] : [])];
  // A placement off loopback is network namespaces this run made: no other host reaches them.
  const listen = hosts.placement.listen.destination;
  if (!link.length && !isLocalOnly({ transport: 'tcp', host: listen, port: 0 })) link.push('--insecure');
  const dst = await hosts.livemig('destination', ['run', '--incoming', `tcp://${hosts.placement.listen.destination}:0`, '--disk', storage.uri('destination'),
    '--memory', String(o.memoryBytes), '--control', join(dir, 'destination.sock'), '--state-dir', join(dir, 'destination'), ...held, ...link]);
  o.onPhase?.('starting the source guest');
  const src = await hosts.livemig('source', ['run', '--name', 'demo', '--memory', String(o.memoryBytes), '--disk', storage.uri('source'), '--workload', o.workload,
    '--seed', String(o.seed ?? 1), '--control', join(dir, 'source.sock'), '--state-dir', join(dir, 'source'),
    ...(o.heap ? ['--heap', o.heap] : []), ...(o.writeSize ? ['--write-size', String(o.writeSize)] : [])]);
  return { src, dst };
}

async function warmUp(control: string, o: LocalRunOptions): Promise<void> {
  for (;;) {
    const s = await controlRequest<GuestStatus>(control, 'status');
    if (s.error) throw new Error(`source guest failed: ${s.error.message}`);
    if (s.progress.phase === 'steady') break;
    o.onPhase?.(`warming up: ${s.p2b.mappedPages} of ${s.p2b.pages} pages mapped`);
    await delay(100);
  }
  await delay(o.warmMs ?? 1000);
}

/** Asks the source to migrate; while it runs, reports each new round from `status`. */
async function migrateWatched(srcControl: string, to: string, o: LocalRunOptions): Promise<MigrationResult> {
  let seen = 0;
  const ticker = setInterval(async () => {
    const s = await controlRequest<{ migration?: { rounds: number; lastRound?: RoundStats } }>(srcControl, 'status').catch(() => null);
    const m = s?.migration;
    if (m?.lastRound && m.rounds > seen) {
      seen = m.rounds;
      o.onRound?.(m.lastRound);
    }
  }, 100);
  try {
    const migrate = { to, ...o.tls, strategy: o.strategy, maxBandwidth: o.maxBandwidth, downtimeLimitMs: o.downtimeLimitMs, maxRounds: 30, converge: 'throttle', keepPaused: o.check !== 'digests', ...o.codecs };
    return await controlRequest<MigrationResult>(srcControl, 'migrate', { migrate }, 600_000);
  } finally {
    clearInterval(ticker);
  }
}

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
  const hosts = new Hosts(o.placement, o.logLevel, o.profileDir);
  const phase = o.onPhase ?? (() => {});
  try {
    let image = o.diskImage;
    if (!image) {
      phase(`writing a ${diskBytesFor(o.memoryBytes) >> 20} MiB disk image`);
      image = makeDiskImage(join(dir, 'disk.img'), diskBytesFor(o.memoryBytes));
    }
    const storage = await (o.storage ?? livemigStorage)(hosts, image, dir);
    const { src, dst } = await startAgents(hosts, o, storage, dir);
    const [srcControl, dstControl] = [join(dir, 'source.sock'), join(dir, 'destination.sock')];
    await warmUp(srcControl, o);
    const run: RunContext = { hosts, storage, pids: { storage: storage.pid, source: src.child.pid!, destination: dst.child.pid! } };
    await o.beforeMigrate?.(run);
    phase(`migrating with ${o.strategy}`);
    const result = await migrateWatched(srcControl, dst.info.incoming as string, o).catch(async (err: Error) => {
      await delay(100); // a crashed agent's exit lands just after the link drops
      throw new Error(`${err.message}${Hosts.lastWords('destination', dst)}${Hosts.lastWords('source', src)}`);
    });
    await o.afterMigrate?.(run);
    const checked = o.check === 'digests' ? null : await oracleCheck(srcControl, dstControl);
    phase(checked ? `memories compared from scratch in ${checked.checkMs} ms: ${checked.oracle.equal ? 'equal' : 'DIFFERENT'}` : 'checked by memory digests');
    const d = await controlRequest<GuestStatus>(dstControl, 'status');
    await controlRequest(dstControl, 'stop').catch(() => {});
    return {
      ...result,
      verified: result.verified && (checked?.oracle.equal ?? true),
      destinationRunning: d.state === 'running' && !d.error,
      check: checked ? 'full' : 'digests',
      ...(checked ? { oracle: checked.oracle } : {}),
      checkMs: checked?.checkMs ?? 0,
    };
  } finally {
    await hosts.stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}
