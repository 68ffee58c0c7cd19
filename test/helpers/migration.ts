/** One migration between in-process agents over real TCP and a real NBD server, for tests. */
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Guest } from '../../src/guest/guest.ts';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { migrate, type MigrateOptions } from '../../src/migrate/source/index.ts';
import { openBackend } from '../../src/storage/open.ts';
import { P2B } from '../../src/p2b/map.ts';
import type { MigrationResult, Strategy } from '../../src/migrate/result.ts';
import { compareFingerprints, type FingerprintComparison } from '../../src/guest/fingerprint.ts';

export interface Migrated {
  result: MigrationResult;
  destination: Guest;
  /** The oracle: both memories compared from scratch at the switch-over (guest/fingerprint.ts). */
  oracle: FingerprintComparison;
  /** Mappings the destination started with, each checked against the storage. */
  mapped: number;
  mappedWrong: number;
}

export async function startWarmGuest(dir: string, name: string, disk: string, workload: string, memoryBytes = 32 << 20): Promise<Guest> {
  const g = await Guest.start({ name, memoryBytes, disk, workload, options: { seed: 4, dirtyRate: 8 << 20, writeRate: 4 << 20 }, stateDir: join(dir, `${name}-src`) });
  for (;;) {
    const s = await g.status();
    if (s.error) throw new Error(`guest failed: ${s.error.message}`);
    if (s.progress.phase === 'steady') break;
    await delay(50);
  }
  await delay(300);
  return g;
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

export async function migrateGuest(
  dir: string,
  source: Guest,
  strategy: Strategy,
  extra: Partial<MigrateOptions> & { destinationDisk?: string; allowDifference?: boolean } = {},
): Promise<Migrated> {
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: extra.destinationDisk, hold: true, stateDir: (n) => join(dir, `${n}-dst-${Date.now()}`) });
  const result = await migrate(source, {
    host: '127.0.0.1', port: incoming.port, strategy, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle', keepPaused: true, ...extra,
  });
  const destination = await incoming.guest;
  const oracle = await checkSwitchover(source, destination, extra);
  // The map the destination starts from must be true: every mapped page equals its block.
  const storage = await openBackend(extra.destinationDisk ?? source.config.disk, { readOnly: true, lock: false });
  const buf = Buffer.alloc(4096);
  let mapped = 0;
  let mappedWrong = 0;
  for (let p = 0; p < destination.map.pages; p++) {
    if (destination.map.state[p] === P2B.NONE) continue;
    mapped++;
    await storage.readInto(buf, destination.map.block[p] * 4096);
    if (!buf.equals(destination.memory.page(p))) mappedWrong++;
  }
  await storage.close();
  await destination.resume();
  return { result, destination, oracle, mapped, mappedWrong };
}
