/**
 * Split brain, tried: the disk is served by `livemig nbd serve` with leases, and
 * the switch-over is broken at its worst moments (RESUMED lost, the destination
 * frozen or killed, the source killed, the storage gone). Exactly one side runs
 * the guest, or none and the error says which to resume; memory and disk are
 * checked against the oracle or a replay of every step (test/helpers/nothing-lost.ts).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { join } from 'node:path';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { queryLease } from '../../src/storage/disk-lease.ts';
import type { Guest, GuestStatus } from '../../src/guest/guest.ts';
import { controlRequest } from '../../src/guest/control/client.ts';
import { tempDir, livemig, waitFor, LIVEMIG } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startWarmGuest, listenHeld, checkSwitchover } from '../helpers/migration.ts';
import { assertNothingLost, type Inspectable } from '../helpers/nothing-lost.ts';
import { leasedDisk } from '../helpers/leased-disk.ts';
import { startFrameTap } from '../helpers/frame-tap.ts';
import { failsWith } from '../helpers/outcome.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const base = join(dir.path, 'base.img');
before(() => randomImage(base, 64 * MiB));
after(() => dir.cleanup());

const opts = { strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const };

/** A guest that has arrived, checked by a replay of the source's steps and its own since. */
function arrivedGuest(d: Guest, sourceSteps: number): Inspectable {
  return { config: d.config, pause: async () => ({ steps: sourceSteps + (await d.pause()).steps }), fingerprint: () => d.fingerprint(), resume: () => d.resume() };
}

test('a lost RESUMED on a leased disk: the destination took the lease and runs; the source learns it from the lease, says MIGRATE_HANDED_OVER and lets go; the oracle and a replay agree', { timeout: 180_000 }, async () => {
  const disk = await leasedDisk(dir.path, base, 'lost');
  const g = await startWarmGuest(dir.path, 'lost', disk.uri, 'mixed', 16 * MiB);
  const incoming = await listenHeld(dir.path, { disk: disk.uri });
  const tap = await startFrameTap(incoming.port, (d, name) => (d === 'toSource' && name === 'RESUMED' ? 'drop' : 'pass'));
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port, completeTimeoutMs: 3000, keepPaused: true }),
      failsWith('MIGRATE_HANDED_OVER', /; but the destination took the disk's lease, so the guest is the destination's: this copy stays paused for good/));
    const destination = await incoming.guest;
    assert.equal((await queryLease(disk.uri))?.holder, destination.leaseToken, 'the lease is the destination guest\'s');
    assert.equal((await g.status()).state, 'postmigrate', 'the source let go');
    await assert.rejects(g.resume(), failsWith('GUEST_MIGRATED'));
    await assert.rejects(g.attachDisk(), failsWith('GUEST_DISK_LEASED'), 'the storage refuses the source the disk');
    const sourceSteps = (await g.status()).steps;
    await checkSwitchover(g, destination); // the oracle: both memories equal at the switch-over
    await destination.resume();
    const arrived = (await destination.status()).steps;
    await waitFor(async () => (await destination.status()).steps >= arrived + 20, 'the destination to run 20 steps');
    await assertNothingLost(arrivedGuest(destination, sourceSteps), disk, dir.path);
    await destination.stop();
  } finally {
    tap.close();
    incoming.close();
    await g.stop();
    await disk.server.stop();
  }
});

test('a destination frozen before DIGESTS: the source gives up, renews the lease and runs on; the thawed destination cannot take the lease and runs nothing; nothing lost', { timeout: 180_000 }, async () => {
  const disk = await leasedDisk(dir.path, base, 'frozen');
  const g = await startWarmGuest(dir.path, 'frozen', disk.uri, 'mixed', 16 * MiB);
  const control = join(dir.path, 'frozen-dst.sock');
  const dst = spawn(process.execPath, [LIVEMIG, 'run', '--incoming', 'tcp://127.0.0.1:0', '--disk', disk.uri, '--control', control, '--state-dir', join(dir.path, 'frozen-dst'), '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const dstExited = once(dst, 'exit');
  const [line] = (await once(createInterface({ input: dst.stdout! }), 'line')) as [string];
  const port = Number(new URL(JSON.parse(line).incoming).port);
  const tap = await startFrameTap(port, (d, name) => {
    if (d === 'toDestination' && name === 'COMPLETE') dst.kill('SIGSTOP'); // frozen with DIGESTS on its way
    return 'pass';
  });
  try {
    const leaseBefore = await queryLease(disk.uri);
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port, completeTimeoutMs: 2000 }),
      failsWith('MIGRATE_TIMEOUT', /the source still held the disk's lease and renewed it/));
    const lease = await queryLease(disk.uri);
    assert.equal(lease?.holder, g.leaseToken);
    assert.ok(lease!.epoch > leaseBefore!.epoch, 'renewed: a handover prepared at the old epoch fails');
    assert.equal((await g.status()).state, 'running', 'the source runs on');
    dst.kill('SIGCONT');
    await waitFor(async () => {
      const st = await livemig(['status', '--control', control, '--json']);
      return st.code === 0 && JSON.parse(st.stdout).incoming?.phase === 'failed';
    }, 'the thawed destination to give up', 60_000);
    assert.equal((await queryLease(disk.uri))?.holder, g.leaseToken, 'the lease stayed with the source');
    await assertNothingLost(g, disk, dir.path);
  } finally {
    dst.kill('SIGCONT');
    dst.kill('SIGKILL');
    await dstExited;
    tap.close();
    await g.stop();
    await disk.server.stop();
  }
});

test('the source agent SIGKILLed after DIGESTS: the destination takes the lease from the dead source and runs the guest; a replay of every step agrees', { timeout: 180_000 }, async () => {
  const disk = await leasedDisk(dir.path, base, 'srckill');
  const control = join(dir.path, 'srckill-src.sock');
  const src = spawn(process.execPath, [LIVEMIG, 'run', '--name', 'sk', '--memory', '16MiB', '--disk', disk.uri, '--workload', 'mixed',
    '--control', control, '--state-dir', join(dir.path, 'srckill-src'), '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const srcExited = once(src, 'exit');
  const incoming = await listenHeld(dir.path, { disk: disk.uri });
  let pausedAt = -1;
  // RESUMED never reaches the source; once it is on its way the source (paused, steps final) is asked its steps and killed.
  const tap = await startFrameTap(incoming.port, (d, name) => {
    if (d !== 'toSource' || name !== 'RESUMED') return 'pass';
    void controlRequest<GuestStatus>(control, 'status').then((s) => ((pausedAt = s.steps), src.kill('SIGKILL')));
    return 'drop';
  });
  try {
    await once(createInterface({ input: src.stdout! }), 'line');
    await waitFor(async () => (await controlRequest<GuestStatus>(control, 'status')).progress.phase === 'steady', 'the source guest to warm up', 60_000);
    void livemig(['migrate', '--control', control, '--to', `tcp://127.0.0.1:${tap.port}`]);
    const destination = await incoming.guest;
    await srcExited;
    assert.ok(pausedAt > 0);
    assert.equal((await queryLease(disk.uri))?.holder, destination.leaseToken);
    await destination.resume();
    const arrived = (await destination.status()).steps;
    await waitFor(async () => (await destination.status()).steps >= arrived + 20, 'the destination to run 20 steps');
    await assertNothingLost(arrivedGuest(destination, pausedAt), disk, dir.path);
    await destination.stop();
  } finally {
    src.kill('SIGKILL');
    tap.close();
    incoming.close();
    await disk.server.stop();
  }
});

test('the destination agent SIGKILLed after it took the lease and RESUMED is lost: the source says MIGRATE_HANDED_OVER and lets go; none runs, and the message says the guest was the destination\'s', { timeout: 180_000 }, async () => {
  const disk = await leasedDisk(dir.path, base, 'dstkill');
  const g = await startWarmGuest(dir.path, 'dstkill', disk.uri, 'mixed', 16 * MiB);
  const control = join(dir.path, 'dstkill-dst.sock');
  const dst = spawn(process.execPath, [LIVEMIG, 'run', '--incoming', 'tcp://127.0.0.1:0', '--disk', disk.uri, '--control', control, '--state-dir', join(dir.path, 'dstkill-dst'), '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const dstExited = once(dst, 'exit');
  const [line] = (await once(createInterface({ input: dst.stdout! }), 'line')) as [string];
  const tap = await startFrameTap(Number(new URL(JSON.parse(line).incoming).port), (d, name) => {
    if (d !== 'toSource' || name !== 'RESUMED') return 'pass';
    dst.kill('SIGKILL');
    return 'drop';
  });
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port, completeTimeoutMs: 3000 }),
      failsWith('MIGRATE_HANDED_OVER', /the guest is the destination's: this copy was stopped; check that it runs there/));
    await dstExited;
    const lease = await queryLease(disk.uri);
    assert.ok(lease?.holder && lease.holder !== g.leaseToken, 'the dead destination holds the lease: the source cannot write');
    await assert.rejects(g.status(), failsWith('GUEST_EXITED'), 'the source let go');
  } finally {
    dst.kill('SIGKILL');
    tap.close();
    await g.stop();
    await disk.server.stop();
  }
});

test('the storage gone when RESUMED is lost: the lease cannot be read, the source stays paused with MIGRATE_OUTCOME_UNKNOWN and says which side to resume', { timeout: 180_000 }, async () => {
  const disk = await leasedDisk(dir.path, base, 'nostore');
  const g = await startWarmGuest(dir.path, 'nostore', disk.uri, 'mixed', 16 * MiB);
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: disk.uri, stateDir: () => join(dir.path, 'nostore-dst') });
  const serverGone = once(disk.server.process, 'exit');
  const tap = await startFrameTap(incoming.port, (d, name) => {
    if (d !== 'toSource' || name !== 'RESUMED') return 'pass';
    disk.server.process.kill('SIGKILL');
    return 'drop';
  });
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port, completeTimeoutMs: 3000 }),
      failsWith('MIGRATE_OUTCOME_UNKNOWN', /the disk's lease cannot be read .*if the destination runs the guest .*stop this one, else 'livemig resume' here/));
    assert.equal((await g.status()).state, 'paused', 'neither resumed nor stopped: nobody can know yet');
    const destination = await incoming.guest; // it took the lease before the storage went
    await destination.stop();
  } finally {
    tap.close();
    incoming.close();
    disk.server.process.kill('SIGKILL');
    await serverGone;
    await g.stop();
  }
});
