/**
 * Storage faults at the destination, injected with nbdkit's `error` and `delay`
 * filters over the guest's disk image: errors switched on at a chosen frame
 * (error-pread-file), slow reads in the drain, a slow open at resume. A failed
 * migration leaves the guest running on the source with nothing lost; one that
 * completes is checked by the oracle.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { requireTools } from '../helpers/tools.ts';
import { tempDir, startNbdkit, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startWarmGuest, migrateGuest } from '../helpers/migration.ts';
import { ownDisk, assertNothingLost } from '../helpers/nothing-lost.ts';
import { startFrameTap } from '../helpers/frame-tap.ts';
import { assertRunsOn, failsWith } from '../helpers/outcome.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const base = join(dir.path, 'base.img');
before(() => randomImage(base, 64 * MiB));
after(() => dir.cleanup());

const opts = { strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const };

/** EIO on every read from the moment `trigger` exists (nbdkit-error-filter). */
const readErrors = (trigger: string) => ['error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}`];

test('storage read errors at the destination during pre-copy: MIGRATE_STORAGE from the destination, the source runs on with nothing lost', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const disk = await ownDisk(dir.path, base, 'eio-pre');
  const trigger = join(dir.path, 'eio-pre.on');
  const kit = await startNbdkit(dir.path, 'file', [disk.image, ...readErrors(trigger)], ['--filter=error', '--readonly']);
  const g = await startWarmGuest(dir.path, 'eio-pre', disk.uri, 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: kit.uri(), stateDir: () => join(dir.path, 'eio-pre-dst') });
  let pages = 0;
  const tap = await startFrameTap(incoming.port, (d, name) => {
    if (d === 'toDestination' && name === 'PAGES' && ++pages === 5) writeFileSync(trigger, '');
    return 'pass';
  });
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port, maxBandwidth: 5_000_000 }), failsWith('MIGRATE_STORAGE', /reading the guest's disk failed/));
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up');
    await assertRunsOn(g);
    await assertNothingLost(g, disk, dir.path);
  } finally {
    tap.close();
    incoming.close();
    await g.stop();
    await kit.stop();
    await disk.server.stop();
  }
});

test('storage read errors at the destination during the drain: MIGRATE_STORAGE, the destination runs nothing, the source resumes with nothing lost', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const disk = await ownDisk(dir.path, base, 'eio-drain');
  const trigger = join(dir.path, 'eio-drain.on');
  // Slow reads and a generous downtime limit: the source stops with fetches still owed, then errors start.
  const kit = await startNbdkit(dir.path, 'file', [disk.image, ...readErrors(trigger), 'delay-read=300ms'], ['--filter=error', '--filter=delay', '--readonly']);
  const g = await startWarmGuest(dir.path, 'eio-drain', disk.uri, 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: kit.uri(), stateDir: () => join(dir.path, 'eio-drain-dst') });
  const tap = await startFrameTap(incoming.port, (d, name) => {
    if (d === 'toDestination' && name === 'COMPLETE') writeFileSync(trigger, '');
    return 'pass';
  });
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port, downtimeLimitMs: 60_000 }), failsWith('MIGRATE_STORAGE', /reading the guest's disk failed/));
    assert.ok(tap.seen.toDestination.includes('COMPLETE'), 'the errors began in the drain');
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up');
    await assertRunsOn(g);
    await assertNothingLost(g, disk, dir.path);
  } finally {
    tap.close();
    incoming.close();
    await g.stop();
    await kit.stop();
    await disk.server.stop();
  }
});

test('slow storage at resume (every open of the disk takes 2 s): the switch-over waits for it and completes; the oracle finds both memories equal and the map true', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const disk = await ownDisk(dir.path, base, 'slow-open');
  const kit = await startNbdkit(dir.path, 'file', [disk.image, 'delay-open=2'], ['--filter=delay']);
  const g = await startWarmGuest(dir.path, 'slow-open', disk.uri, 'mixed', 16 * MiB);
  try {
    const m = await migrateGuest(dir.path, g, 'p2b', { destinationDisk: kit.uri() });
    assert.equal(m.result.verified, true);
    assert.equal(m.oracle.equal, true);
    assert.equal(m.mappedWrong, 0);
    await waitFor(async () => (await m.destination.status()).steps > 10, 'the destination to run on its slow disk');
    await m.destination.stop();
  } finally {
    await g.stop();
    await kit.stop();
    await disk.server.stop();
  }
});
