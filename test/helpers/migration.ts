/** One migration between in-process agents over real TCP and a real NBD server, for tests. */
import { join } from 'node:path';
import { Guest } from '../../src/guest/guest.ts';
import type { WorkloadOptions } from '../../src/guest/workloads/workload.ts';
import { listenIncoming, type Incoming, type IncomingOptions } from '../../src/migrate/destination/index.ts';
import { migrate, type MigrateOptions } from '../../src/migrate/source/index.ts';
import { openBackend } from '../../src/storage/open.ts';
import { P2B } from '../../src/p2b/map.ts';
import type { MigrationResult, Strategy } from '../../src/migrate/result.ts';
import { compareFingerprints, type FingerprintComparison } from '../../src/guest/fingerprint.ts';
import { waitFor } from './processes.ts';

export interface Migrated {
  result: MigrationResult;
  destination: Guest;
  /** The oracle: both memories compared from scratch at the switch-over (guest/fingerprint.ts). */
  oracle: FingerprintComparison;
  /** Mappings the destination started with, each checked against the storage. */
  mapped: number;
  mappedWrong: number;
}

/** Steps a warm guest runs in steady state before it is handed to a test (a fixed count, not a time). */
const STEADY_STEPS = 10;

export async function startWarmGuest(dir: string, name: string, disk: string, workload: string, memoryBytes = 32 << 20, options: Partial<WorkloadOptions> = {}): Promise<Guest> {
  const g = await Guest.start({ name, memoryBytes, disk, workload, options: { seed: 4, dirtyRate: 8 << 20, writeRate: 4 << 20, ...options }, stateDir: join(dir, `${name}-src`) });
  let steady = -1;
  await waitFor(async () => {
    const s = await g.status();
    if (s.error) throw new Error(`guest failed: ${s.error.message}`);
    if (s.progress.phase === 'steady' && steady < 0) steady = s.steps;
    return steady >= 0 && s.steps >= steady + STEADY_STEPS;
  }, `guest ${name} to warm up and run ${STEADY_STEPS} steady steps`, 60_000);
  return g;
}

/** A destination that holds the arrived guest paused, so the oracle can compare it with the source (migrateGuest's `to`). */
export function listenHeld(dir: string, opts: Partial<IncomingOptions> & { disk: string }): Promise<Incoming> {
  return listenIncoming({ host: '127.0.0.1', port: 0, stateDir: (n) => join(dir, `${n}-dst-${Date.now()}`), ...opts, hold: true });
}

/**
 * The oracle check of one migration: the source stays paused after the switch-over
 * (postmigrate) and the destination was held paused (hold), so both memories are
 * still those of the switch-over instant; each is fingerprinted from scratch and
 * compared. Then the source stops and the destination runs.
 */
export async function checkSwitchover(source: Guest, destination: Guest, opts: { allowDifference?: boolean } = {}): Promise<FingerprintComparison> {
  const [a, b] = await Promise.all([source.fingerprint(), destination.fingerprint()]);
  const oracle = compareFingerprints(a, b);
  if (!opts.allowDifference && !oracle.equal) {
    throw new Error(`the oracle found ${oracle.differentChunks} MiB of memory differing between source and destination (first at byte ${oracle.firstDifference})`);
  }
  await source.stop();
  return oracle;
}

export interface MigrateGuestOptions extends Partial<MigrateOptions> {
  /** The destination's disk, if not the source's. */
  destinationDisk?: string;
  allowDifference?: boolean;
  /** A destination already listening (made by listenHeld); by default a fresh one. */
  to?: Incoming;
  /** Options for the fresh destination. */
  incoming?: Partial<IncomingOptions>;
  /** Where the source connects, given the destination's port (a tap in between); by default the destination itself. */
  via?: (destinationPort: number) => Promise<number>;
  /** Called at the switch-over, both guests paused (the source in postmigrate), before the oracle runs. */
  atSwitchover?: (source: Guest, destination: Guest) => Promise<void>;
}

export async function migrateGuest(dir: string, source: Guest, strategy: Strategy, extra: MigrateGuestOptions = {}): Promise<Migrated> {
  const incoming = extra.to ?? (await listenHeld(dir, { disk: extra.destinationDisk ?? source.config.disk, ...extra.incoming }));
  const port = extra.via ? await extra.via(incoming.port) : incoming.port;
  const result = await migrate(source, {
    host: '127.0.0.1', port, strategy, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle', keepPaused: true, ...extra,
  });
  const destination = await incoming.guest;
  await extra.atSwitchover?.(source, destination);
  const oracle = await checkSwitchover(source, destination, extra);
  // The map the destination starts from must be true: every mapped page equals its block.
  const storage = await openBackend(extra.destinationDisk ?? source.config.disk, { readOnly: true, lock: false });
  const pages: number[] = [];
  for (let p = 0; p < destination.map.pages; p++) if (destination.map.state[p] !== P2B.NONE) pages.push(p);
  let mappedWrong = 0;
  for (let i = 0; i < pages.length; i += 64) {
    // 64 reads at a time: one by one, the check took about as long as the migration itself.
    await Promise.all(pages.slice(i, i + 64).map(async (p) => {
      const buf = Buffer.alloc(4096);
      await storage.readInto(buf, destination.map.block[p] * 4096);
      if (!buf.equals(destination.memory.page(p))) mappedWrong++;
    }));
  }
  const mapped = pages.length;
  await storage.close();
  await destination.resume();
  return { result, destination, oracle, mapped, mappedWrong };
}
