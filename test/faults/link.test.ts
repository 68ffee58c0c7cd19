/**
 * The migration link cut at the phases test/migrate/failures.test.ts does not
 * cover: in the handshake, and in stop-and-copy when the disk has a lease (the
 * lease then settles what the source cannot know).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { queryLease } from '../../src/storage/disk-lease.ts';
import { tempDir, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startWarmGuest } from '../helpers/migration.ts';
import { ownDisk, assertNothingLost } from '../helpers/nothing-lost.ts';
import { leasedDisk } from '../helpers/leased-disk.ts';
import { startFrameTap } from '../helpers/frame-tap.ts';
import { assertRunsOn, failsWith } from '../helpers/outcome.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const base = join(dir.path, 'base.img');
before(() => randomImage(base, 64 * MiB));
after(() => dir.cleanup());

const opts = { strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const };

test('a link cut in the handshake (WELCOME lost): MIGRATE_LINK_LOST, the source never paused and runs on with nothing lost; the destination listens again', { timeout: 120_000 }, async () => {
  const disk = await ownDisk(dir.path, base, 'hs');
  const g = await startWarmGuest(dir.path, 'hs', disk.uri, 'mixed', 16 * MiB);
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: disk.uri, stateDir: () => join(dir.path, 'hs-dst') });
  const tap = await startFrameTap(incoming.port, (d, name) => (d === 'toSource' && name === 'WELCOME' ? 'cut' : 'pass'));
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port }), failsWith('MIGRATE_LINK_LOST'));
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up');
    await assertRunsOn(g);
    await assertNothingLost(g, disk, dir.path);
  } finally {
    tap.close();
    incoming.close();
    await g.stop();
    await disk.server.stop();
  }
});

test('a link cut in stop-and-copy on a leased disk: the source still holds the lease, renews it and resumes by itself (MIGRATE_LINK_LOST, not OUTCOME_UNKNOWN); nothing lost', { timeout: 120_000 }, async () => {
  const disk = await leasedDisk(dir.path, base, 'cutlease');
  const g = await startWarmGuest(dir.path, 'cutlease', disk.uri, 'mixed', 16 * MiB);
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: disk.uri, stateDir: () => join(dir.path, 'cutlease-dst') });
  const tap = await startFrameTap(incoming.port, (d, name) => (d === 'toDestination' && name === 'DIGESTS' ? 'cut' : 'pass'));
  try {
    const before = await queryLease(disk.uri);
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port }), failsWith('MIGRATE_LINK_LOST', /the source still held the disk's lease and renewed it/));
    assert.ok(tap.seen.toDestination.includes('DIGESTS'), 'cut after the source sent everything');
    const after = await queryLease(disk.uri);
    assert.equal(after?.holder, g.leaseToken);
    assert.ok(after!.epoch > before!.epoch);
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up');
    await assertRunsOn(g);
    await assertNothingLost(g, disk, dir.path);
  } finally {
    tap.close();
    incoming.close();
    await g.stop();
    await disk.server.stop();
  }
});
