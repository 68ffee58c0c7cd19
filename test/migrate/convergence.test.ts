/**
 * When pre-copy stops: the policy of src/migrate/source/convergence.ts on its
 * own (its clock is a parameter, so no test waits), then whole migrations of a
 * guest that dirties memory far faster than a small bandwidth limit carries:
 * with converge 'abort' it fails and the guest runs on; with 'throttle' the
 * guest is slowed step by step until the estimate fits; maxRounds bounds both.
 * What is asserted is the engine's decision rule on its own figures (the round
 * stats), never wall-clock downtime.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Convergence, type ConvergenceOptions } from '../../src/migrate/source/convergence.ts';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { LivemigError } from '../../src/errors.ts';
import type { RoundStats } from '../../src/migrate/result.ts';
import { tempDir, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startWarmGuest, migrateGuest } from '../helpers/migration.ts';
import { ownDisk, assertNothingLost, type OwnDisk } from '../helpers/nothing-lost.ts';

const MiB = 1024 * 1024;
const LIMIT = 300;
const policy = (o: Partial<ConvergenceOptions> = {}) => new Convergence({ downtimeLimitMs: LIMIT, maxRounds: 30, converge: 'throttle', ...o });

test('an estimate that fits with little settling work left stops pre-copy', () => {
  assert.deepEqual(policy().next(0, 200, 0, 0), { action: 'stop' });
  assert.deepEqual(policy().next(3, 100, LIMIT / 4, 0), { action: 'stop' }, 'settling work up to a quarter of the limit is small');
  assert.deepEqual(policy().next(3, LIMIT, 0, 0), { action: 'stop' }, 'the limit itself fits');
});

test('settling work that is not small: wait for it (a quarter of it, 10 to 100 ms) while it shrinks, without counting a slow round', () => {
  const c = policy({ maxRounds: 2, converge: 'abort' });
  assert.deepEqual(c.next(0, 50, 200, 0), { action: 'settle', waitMs: 50 }, 'fits, but 200 ms of settling is more than a quarter of the limit');
  assert.deepEqual(c.next(1, 50, 20 + 76, 10), { action: 'settle', waitMs: 24 });
  assert.deepEqual(c.next(2, 250, 500, 20), { action: 'settle', waitMs: 100 }, 'the link fits, the settling does not yet: wait, capped at 100 ms');
  assert.deepEqual(c.next(3, 295, 8, 30), { action: 'settle', waitMs: 10 }, 'at least 10 ms');
  // None of these was a slow round: with maxRounds 2 and abort, two slow rounds are still allowed before giving up.
  assert.deepEqual(c.next(4, 400, 0, 40), { action: 'iterate', throttle: 0 });
  assert.deepEqual(c.next(5, 400, 0, 50), { action: 'abort' });
});

test('settling work that fits but stopped shrinking stops pre-copy after four limits of stalling', () => {
  const c = policy();
  assert.equal(c.next(0, 50, 200, 0).action, 'settle');
  assert.equal(c.next(1, 50, 200, 100).action, 'settle', 'not shrinking: stalled from here');
  assert.equal(c.next(2, 50, 200, 100 + 4 * LIMIT).action, 'settle', 'stalled exactly four limits: not yet');
  assert.deepEqual(c.next(3, 50, 200, 100 + 4 * LIMIT + 1), { action: 'stop' });
  // Shrinking settling work restarts the count.
  const d = policy();
  d.next(0, 50, 200, 0);
  d.next(1, 50, 200, 100); // stalled since t=100
  assert.equal(d.next(2, 50, 190, 1000).action, 'settle', 'shrank: no longer stalled');
  assert.equal(d.next(3, 50, 190, 1400).action, 'settle', 'stalled again, since t=1400 (from t=100 it would have stopped)');
  assert.equal(d.next(4, 50, 190, 1400 + 4 * LIMIT).action, 'settle');
  assert.equal(d.next(5, 50, 190, 1400 + 4 * LIMIT + 1).action, 'stop');
});

test('slow rounds throttle the guest 20, 30, 40 ... capped at 99, from the second slow round on', () => {
  const c = policy({ maxRounds: 100 });
  const throttles: number[] = [];
  for (let n = 0; n < 13; n++) {
    const d = c.next(n, 1000, 0, n);
    assert.equal(d.action, 'iterate');
    throttles.push((d as { throttle: number }).throttle);
  }
  assert.deepEqual(throttles, [0, 20, 30, 40, 50, 60, 70, 80, 90, 99, 99, 99, 99]);
  assert.equal(c.throttle, 99);
  assert.deepEqual(c.next(13, 100, 0, 13), { action: 'stop' }, 'once it fits, it stops, throttled');
});

test('maxRounds slow rounds: converge abort gives up, never throttling; converge throttle stops anyway', () => {
  const abort = policy({ maxRounds: 4, converge: 'abort' });
  for (let n = 0; n < 3; n++) assert.deepEqual(abort.next(n, 1000, 0, n), { action: 'iterate', throttle: 0 });
  assert.deepEqual(abort.next(3, 1000, 0, 3), { action: 'abort' });
  assert.equal(abort.throttle, 0);
  const throttle = policy({ maxRounds: 4 });
  assert.deepEqual([0, 1, 2].map((n) => throttle.next(n, 1000, 0, n)), [{ action: 'iterate', throttle: 0 }, { action: 'iterate', throttle: 20 }, { action: 'iterate', throttle: 30 }]);
  assert.deepEqual(throttle.next(3, 1000, 0, 3), { action: 'stop' });
});

test('a link estimate over the limit is a slow round even with no settling work; endless settling turns into slow rounds', () => {
  assert.equal(policy().next(0, LIMIT + 1, 0, 0).action, 'iterate');
  // A destination whose settling never ends cannot hold pre-copy forever.
  const c = policy({ maxRounds: 1, converge: 'abort' });
  assert.equal(c.next(9_999, 10, 1e6, 0).action, 'settle');
  assert.deepEqual(c.next(10_000, 10, 1e6, 1), { action: 'abort' });
});

// --- whole migrations ------------------------------------------------------

const dir = tempDir();
const base = join(dir.path, 'base.img');
let disk: OwnDisk;
before(async () => {
  randomImage(base, 64 * MiB);
  disk = await ownDisk(dir.path, base, 'conv');
});
after(async () => {
  await disk?.server.stop();
  dir.cleanup();
});

/**
 * 8 MiB of guest, half of it heap rewritten at 64 MiB/s (80 % of writes on a hot
 * fifth), over a link limited to 6 MB/s: a round of the dirty heap takes about
 * 0.7 s while the limit is 0.3 s, so pre-copy cannot converge unthrottled.
 */
const GUEST = 8 * MiB;
const DIRTY = { dirtyRate: 64 * MiB };
const LINK = { maxBandwidth: 6_000_000, downtimeLimitMs: LIMIT };
/**
 * For the tests that need every round slow: at 2 MB/s the limit carries ~146 pages,
 * fewer than the hot fifth's 200, which even a guest starved of CPU on a loaded
 * machine rewrites within a round (at 6 MB/s a starved guest once fitted the limit).
 */
const SLOW_LINK = { maxBandwidth: 2_000_000, downtimeLimitMs: LIMIT };
/** The pre-copy rounds (the last round stat is stop-and-copy's). */
const precopyRounds = (rounds: RoundStats[]) => rounds.slice(0, -1);

test('converge abort: a guest dirtying faster than the link fails with MIGRATE_NOT_CONVERGED after maxRounds, unthrottled, and runs on with nothing lost', { timeout: 120_000 }, async () => {
  const g = await startWarmGuest(dir.path, 'abort', disk.uri, 'dirty', GUEST, DIRTY);
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: disk.uri, stateDir: () => join(dir.path, 'abort-dst') });
  const rounds: RoundStats[] = [];
  try {
    const migrating = migrate(g, { ...SLOW_LINK, host: '127.0.0.1', port: incoming.port, strategy: 'baseline', maxRounds: 3, converge: 'abort', onRound: (r) => rounds.push(r) });
    await assert.rejects(migrating, (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_NOT_CONVERGED' && /after 3 rounds/.test(e.message));
    assert.equal(rounds.length, 3, 'three slow rounds, then it gave up');
    for (const r of rounds) {
      assert.ok(r.estimatedDowntimeMs > LIMIT, `round ${r.round}: estimate ${Math.round(r.estimatedDowntimeMs)} ms over the limit`);
      assert.equal(r.throttle, 0, 'converge abort never throttles');
    }
    const s = await g.status();
    assert.equal(s.state, 'running');
    assert.equal(s.throttle, 0);
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up');
    await assertNothingLost(g, disk, dir.path);
  } finally {
    incoming.close();
    await g.stop();
  }
});

test('converge throttle: the guest is throttled step by step until the estimate fits the limit; the oracle finds both memories equal', { timeout: 180_000 }, async () => {
  const g = await startWarmGuest(dir.path, 'throttle', disk.uri, 'dirty', GUEST, DIRTY);
  const m = await migrateGuest(dir.path, g, 'p2b', { ...LINK, maxRounds: 30, converge: 'throttle' });
  try {
    const r = m.result;
    assert.equal(r.verified, true);
    assert.equal(m.oracle.equal, true);
    assert.ok(r.finalThrottle > 0, 'it took throttling to converge');
    const pre = precopyRounds(r.roundStats);
    const last = pre[pre.length - 1];
    assert.ok(last.estimatedDowntimeMs <= LIMIT, `the last pre-copy round's estimate (${Math.round(last.estimatedDowntimeMs)} ms) fits the ${LIMIT} ms limit`);
    assert.ok(pre.filter((x) => x.estimatedDowntimeMs > LIMIT).length >= 2, 'slow rounds came first: throttling starts at the second');
    for (let i = 1; i < pre.length; i++) assert.ok(pre[i].throttle >= pre[i - 1].throttle, 'the throttle only rises during pre-copy');
    assert.ok(pre.length < 30, 'converged before the rounds ran out');
    assert.equal(r.finalThrottle, last.throttle, 'the throttle in force when pre-copy stopped is the one reported');
    assert.equal((await m.destination.status()).throttle, 0, 'the throttle stays behind: the destination runs at full speed');
  } finally {
    await m.destination.stop();
  }
});

test('converge throttle with maxRounds: pre-copy stops after maxRounds slow rounds anyway, and the oracle still finds both memories equal', { timeout: 120_000 }, async () => {
  const g = await startWarmGuest(dir.path, 'maxrounds', disk.uri, 'dirty', GUEST, DIRTY);
  const m = await migrateGuest(dir.path, g, 'baseline', { ...SLOW_LINK, maxRounds: 3, converge: 'throttle' });
  try {
    assert.equal(m.oracle.equal, true);
    const pre = precopyRounds(m.result.roundStats);
    assert.equal(pre.length, 3, 'three rounds, no more');
    for (const r of pre) assert.ok(r.estimatedDowntimeMs > LIMIT, `round ${r.round} was slow (${Math.round(r.estimatedDowntimeMs)} ms)`);
    assert.deepEqual(pre.map((r) => r.throttle), [0, 0, 20], 'throttled from the second slow round');
    assert.equal(m.result.finalThrottle, 20);
  } finally {
    await m.destination.stop();
  }
});
