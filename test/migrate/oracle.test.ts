/**
 * The oracle bites: each injected fault (src/migrate/faults.ts, reachable only
 * in-process) is a bug of the kind migrations must never hide, and each makes
 * the migration fail its check. A write the source's dirty log never reported
 * passes the engine's digests (they rest on that log) and only the oracle, which
 * compares both memories anew, catches it. Corruption that lands in the
 * destination's memory is caught by the digests before the switch-over; then the
 * source must run on with nothing lost.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { LivemigError } from '../../src/errors.ts';
import { compareFingerprints, fingerprint } from '../../src/guest/fingerprint.ts';
import { GuestMemory } from '../../src/guest/memory.ts';
import type { Faults } from '../../src/migrate/faults.ts';
import { requireTools } from '../helpers/tools.ts';
import { tempDir, startNbdkit, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startWarmGuest, migrateGuest } from '../helpers/migration.ts';
import { ownDisk, assertNothingLost } from '../helpers/nothing-lost.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const base = join(dir.path, 'base.img');
before(() => randomImage(base, 64 * MiB));
after(() => dir.cleanup());

const opts = { strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const };

test('the oracle tells one flipped byte in a GiB-sized memory, and where', () => {
  const a = GuestMemory.allocate(1024 * MiB + 8 * MiB); // two regions; sparse until written
  const b = GuestMemory.allocate(1024 * MiB + 8 * MiB);
  assert.equal(compareFingerprints(fingerprint(a), fingerprint(b)).equal, true);
  b.regions[1][3 * MiB + 17] = 1;
  const c = compareFingerprints(fingerprint(a), fingerprint(b));
  assert.deepEqual(c, { equal: false, differentChunks: 1, firstDifference: 1024 * MiB + 3 * MiB });
});

test('a write whose dirty bit was lost passes the engine\'s digests, and the oracle catches it', async () => {
  const disk = await ownDisk(dir.path, base, 'untracked');
  const g = await startWarmGuest(dir.path, 'untracked', disk.uri, 'pagecache');
  const faults: Faults = { dropDirtyBit: true };
  try {
    const m = await migrateGuest(dir.path, g, 'p2b', { faults, allowDifference: true });
    try {
      assert.notEqual(faults.fired?.dropDirtyBit, undefined, 'the fault fired');
      assert.equal(m.result.verified, true, 'the digests agree: they rest on the dirty log that missed the write');
      assert.equal(m.oracle.equal, false, 'the oracle finds the difference');
      assert.equal(m.oracle.differentChunks, 1);
      assert.equal(Math.floor(m.oracle.firstDifference! / MiB), Math.floor((faults.fired!.dropDirtyBit! * 4096) / MiB), 'in the MiB of the page written');
    } finally {
      await m.destination.stop();
    }
  } finally {
    await disk.server.stop();
  }
});

test('a page corrupted on the wire is refused by the digests: MIGRATE_VERIFY_FAILED, and the source runs on with nothing lost', async () => {
  const disk = await ownDisk(dir.path, base, 'wire');
  const g = await startWarmGuest(dir.path, 'wire', disk.uri, 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, hold: true, disk: disk.uri, stateDir: () => join(dir.path, 'wire-dst') });
  const faults: Faults = { corruptWirePage: { round: 1 } };
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port, faults, keepPaused: true }), (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_VERIFY_FAILED');
    assert.notEqual(faults.fired?.corruptWirePage, undefined, 'the fault fired');
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up');
    assert.equal((await g.status()).state, 'running');
    await assertNothingLost(g, disk, dir.path);
  } finally {
    incoming.close();
    await g.stop();
    await disk.server.stop();
  }
});

test('a stale block applied over a newer version of its page is refused by the digests, and the source runs on with nothing lost', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const disk = await ownDisk(dir.path, base, 'stale');
  // The destination reads through a slow server, so newer page versions overtake their blocks; `mixed`
  // updates pages it read from disk, so a newer version differs from the block.
  const slow = await startNbdkit(dir.path, 'file', [disk.image, 'delay-read=30ms'], ['--filter=delay', '--readonly']);
  const g = await startWarmGuest(dir.path, 'stale', disk.uri, 'mixed');
  const faults: Faults = { applyStaleBlock: true };
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, hold: true, disk: slow.uri(), faults, stateDir: () => join(dir.path, 'stale-dst') });
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port, keepPaused: true }), (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_VERIFY_FAILED');
    assert.notEqual(faults.fired?.applyStaleBlock, undefined, 'the fault fired');
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up');
    await assertNothingLost(g, disk, dir.path);
  } finally {
    incoming.close();
    await g.stop();
    await slow.stop();
    await disk.server.stop();
  }
});
