/**
 * A bounded fuzz campaign against one target process: sessions from a seed until
 * a budget of frames (migration) or requests (NBD) is spent, each on its own TCP
 * connection that must end within a bound; the target's memory sampled all along;
 * then a valid peer must still be served (health.ts). A session that hangs, kills
 * the target or makes it fail without naming why is written to a file that
 * `npm run bench -- fuzz --replay FILE` sends again.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeDiskImage } from '../../src/demo/disk-image.ts';
import { migrationSession, MIGRATION_TERMINATOR, type FuzzSession } from './migration-session.ts';
import { nbdSession, NBD_TERMINATOR, type NbdSession } from './nbd-session.ts';
import { bytesPlayer, type Armed, type Played, type PlayBounds } from './player.ts';
import { followMigration, followNbd } from './replies.ts';
import { startDestination, startNbdServer, RssSampler } from './targets.ts';
import { migrationHealth, nbdHealth, type MigrationHealth, type NbdHealth } from './health.ts';
import { armUnauthenticated, type TlsFindings } from './tls-target.ts';
import type { TlsMode } from './credentials.ts';

export type FuzzTarget = 'migration' | 'nbd';

export interface CampaignOptions {
  target: FuzzTarget;
  seed: number;
  /** Frames (migration) or requests (NBD) to send. */
  budget: number;
  /** A directory of its own: the disk, the target's TMPDIR, failing cases. */
  dir: string;
  /** How long the target may take to close a connection after the session's last byte (and the nudges). */
  boundMs?: number;
  /** How long a target that still waits for more is left before it is nudged (connection.ts). */
  quietMs?: number;
  /** Connections at once (the destination serves one; a second is told it is busy). */
  concurrency?: number;
  /** Longest run of frames or requests in one session. */
  perSession?: number;
  /** Extra arguments for the target process. */
  targetArgs?: string[];
  /** Migration: the destination has credentials and every hostile peer is unauthenticated (tls-target.ts). */
  tls?: TlsMode;
  onProgress?: (done: number, budget: number) => void;
}

export interface FailingCase {
  index: number;
  kind: string;
  reason: string;
  file: string;
}

export interface CampaignResult {
  target: FuzzTarget;
  seed: number;
  sessions: number;
  /** Frames or requests sent, and (NBD) replies counted back. */
  sent: number;
  answered: number;
  bytesOut: number;
  elapsedMs: number;
  /** The target's peak RSS under hostile input (the health migration's guest memory is not counted). */
  maxRssBytes: number;
  rssSamples: number;
  maxCloseMs: number;
  /** Sessions the target kept open until nudged, by nudge. */
  nudged: Record<string, number>;
  hangs: number;
  targetExit: string | null;
  /** ERROR codes the destination sent, by code. */
  errorCodes: Record<string, number>;
  kinds: Record<string, number>;
  failures: FailingCase[];
  /** Files the target left in its TMPDIR. */
  leftovers: string[];
  health: MigrationHealth | NbdHealth | { error: string } | null;
  /** With --tls: where the destination dropped the hostile peers, by its own log. */
  tls: TlsFindings | null;
}

const MiB = 1 << 20;
/** The destination's guest: small, so a session's setup costs little. */
export const FUZZ_GUEST_BYTES = 8 * MiB;
const FUZZ_DISK_BYTES = 32 * MiB;
const NBD_EXPORTS = [{ name: 'mem', size: 64 * MiB }, { name: 'disk', size: 16 * MiB }];
const NBD_MAX_REQUEST = MiB;

async function arm(o: CampaignOptions & PlayBounds): Promise<Armed> {
  const disk = join(o.dir, 'disk.img');
  if (o.target === 'migration') {
    makeDiskImage(disk, FUZZ_DISK_BYTES);
    const ctx = { memoryBytes: FUZZ_GUEST_BYTES, disk: readFileSync(disk), diskSpec: disk, maxFrames: o.perSession ?? 2000 };
    if (o.tls) return armUnauthenticated(o.tls, o, ctx);
    const target = await startDestination(o.dir, disk, FUZZ_GUEST_BYTES, o.targetArgs);
    return {
      target,
      make: (i) => migrationSession(o.seed, i, ctx),
      play: bytesPlayer(target, MIGRATION_TERMINATOR, o, (_s, _r, codes) => followMigration((code) => codes.push(code))),
      health: () => migrationHealth(target, o.dir, disk, FUZZ_GUEST_BYTES),
    };
  }
  makeDiskImage(disk, NBD_EXPORTS[1].size);
  const target = await startNbdServer(o.dir, ['--memory-export', `mem=${NBD_EXPORTS[0].size}`, '--export', `disk=${disk}`, '--max-request', String(NBD_MAX_REQUEST)], o.targetArgs);
  const ctx = { exports: NBD_EXPORTS, maxRequest: NBD_MAX_REQUEST, maxRequests: o.perSession ?? 4000 };
  return {
    target,
    make: (i) => nbdSession(o.seed, i, ctx),
    play: bytesPlayer(target, NBD_TERMINATOR, o, (s, r) => followNbd((s as NbdSession).plan, (n) => (r.answered += n))),
    health: () => nbdHealth(target, 'mem', NBD_EXPORTS[0].size),
  };
}

function writeCase(o: CampaignOptions, index: number, s: FuzzSession, reason: string): FailingCase {
  const casesDir = join(o.dir, 'cases');
  mkdirSync(casesDir, { recursive: true });
  const file = join(casesDir, `${o.target}-seed${o.seed}-${index}.bin`);
  writeFileSync(file, Buffer.concat(s.bytes));
  writeFileSync(`${file}.json`, JSON.stringify({ target: o.target, tls: o.tls ?? null, seed: o.seed, index, kind: s.kind, fin: s.fin ?? false, reason }, null, 2) + '\n');
  return { index, kind: s.kind, reason, file };
}

function judge(o: CampaignOptions, r: CampaignResult, i: number, s: FuzzSession, { out, codes, failure }: Played): void {
  r.maxCloseMs = Math.max(r.maxCloseMs, out.closeMs);
  if (out.nudged !== 'none') r.nudged[`${s.kind}/${out.nudged}`] = (r.nudged[`${s.kind}/${out.nudged}`] ?? 0) + 1;
  r.bytesOut += out.bytesOut;
  for (const c of codes) r.errorCodes[c] = (r.errorCodes[c] ?? 0) + 1;
  const unnamed = codes.includes('MIGRATE_FAILED');
  if (!out.closed) {
    r.hangs++;
    r.failures.push(writeCase(o, i, s, `the target did not close the connection within ${o.boundMs} ms, even after a frame it must refuse and a FIN`));
  } else if (out.connectError) r.failures.push(writeCase(o, i, s, `cannot connect: ${out.connectError}`));
  else if (unnamed) r.failures.push(writeCase(o, i, s, 'the destination failed without naming why (MIGRATE_FAILED)'));
  else if (failure) r.failures.push(writeCase(o, i, s, failure));
}

function listTree(dir: string, prefix = ''): string[] {
  let out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(prefix, e.name);
    out = e.isDirectory() ? [...out, ...listTree(join(dir, e.name), p)] : [...out, p];
  }
  return out;
}

export async function runCampaign(o: CampaignOptions): Promise<CampaignResult> {
  mkdirSync(o.dir, { recursive: true });
  // A TLS peer that waits for the rest of a record is nudged sooner: such sessions are many and each waits twice.
  const opts = { boundMs: 30_000, quietMs: o.tls ? 1000 : 3000, concurrency: o.target === 'nbd' ? 4 : o.tls ? 2 : 1, ...o };
  const armed = await arm(opts);
  const { target } = armed;
  const r: CampaignResult = {
    target: o.target, seed: o.seed, sessions: 0, sent: 0, answered: 0, bytesOut: 0, elapsedMs: 0, maxRssBytes: 0, rssSamples: 0, maxCloseMs: 0, nudged: {},
    hangs: 0, targetExit: null, errorCodes: {}, kinds: {}, failures: [], leftovers: [], health: null, tls: null,
  };
  const rss = new RssSampler(() => target.pids);
  let dead: string | null = null;
  void target.exited.then((e) => (dead = `exited with ${e.code ?? e.signal}`));
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (r.sent < o.budget && !dead) {
      const i = next++;
      const s = armed.make(i);
      const played = await armed.play(s, r);
      r.sent += s.requests ?? s.frames;
      r.kinds[s.kind] = (r.kinds[s.kind] ?? 0) + 1;
      r.sessions++;
      judge(opts, r, i, s, played);
      if (dead) r.failures.push(writeCase(opts, i, s, `the target ${dead} during this session`));
      o.onProgress?.(Math.min(r.sent, o.budget), o.budget);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  r.elapsedMs = Math.round(performance.now() - t0);
  r.targetExit = dead;
  rss.stop();
  r.maxRssBytes = rss.maxBytes;
  r.rssSamples = rss.samples;
  if (!dead) await armed.settle?.(r);
  if (!dead) {
    r.health = await armed.health().catch((e: Error) => ({ error: e.message }));
  }
  await target.stop();
  r.leftovers = listTree(join(o.dir, 'tmp'));
  return r;
}
