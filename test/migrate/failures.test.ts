/**
 * What must not lose anything: a dying destination, a cut link, storage that
 * vanishes or changes behind livemig's back, a peer of another version, a
 * destination whose disk is another one (refused), failures after the pause. Every failed
 * migration checks that nothing was lost, by replaying the source's steps on a
 * pristine copy of its disk (test/helpers/nothing-lost.ts): memory and disk equal.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { join } from 'node:path';
import { copyFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { Channel } from '../../src/wire/index.ts';
import { P2B } from '../../src/p2b/map.ts';
import type { GuestStatus } from '../../src/guest/guest.ts';
import type { Fingerprint } from '../../src/guest/fingerprint.ts';
import { controlRequest } from '../../src/guest/control/client.ts';
import { requireTools } from '../helpers/tools.ts';
import { tempDir, startNbdkit, livemig, run, waitFor, LIVEMIG, REPO } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startNbdServe } from '../helpers/nbd-serve.ts';
import { startWarmGuest, migrateGuest, checkSwitchover } from '../helpers/migration.ts';
import { ownDisk, assertNothingLost, type Inspectable } from '../helpers/nothing-lost.ts';
import { startFrameTap } from '../helpers/frame-tap.ts';
import { assertRunsOn, failsWith } from '../helpers/outcome.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const base = join(dir.path, 'base.img');
before(() => randomImage(base, 64 * MiB));
after(() => dir.cleanup());

const opts = { strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const };

/** A source guest in another process, inspected through its control socket. */
function overControl(control: string, config: Inspectable['config']): Inspectable {
  return {
    config,
    pause: () => controlRequest<GuestStatus>(control, 'pause'),
    fingerprint: () => controlRequest<Fingerprint>(control, 'fingerprint'),
    resume: () => controlRequest(control, 'resume'),
  };
}

test('a destination killed mid-round: migrate exits 1 with one line, the source runs on with nothing lost', async () => {
  const disk = await ownDisk(dir.path, base, 'kill');
  const dstControl = join(dir.path, 'kill-dst.sock');
  const srcControl = join(dir.path, 'kill-src.sock');
  const dst = spawn(process.execPath, [LIVEMIG, 'run', '--incoming', 'tcp://127.0.0.1:0', '--control', dstControl, '--disk', disk.uri, '--state-dir', join(dir.path, 'kill-dst'), '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const src = spawn(process.execPath, [LIVEMIG, 'run', '--name', 'k', '--memory', '32MiB', '--disk', disk.uri, '--workload', 'pagecache',
    '--control', srcControl, '--state-dir', join(dir.path, 'kill-src'), '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const srcExited = once(src, 'exit');
  try {
    const [dstLine] = (await once(createInterface({ input: dst.stdout! }), 'line')) as [string];
    await once(createInterface({ input: src.stdout! }), 'line');
    await waitFor(async () => (await controlRequest<GuestStatus>(srcControl, 'status')).progress.phase === 'steady', 'the source guest to warm up', 60_000);
    // A slow link and full pages (references would shrink round 0 to seconds), uncompressed (LZ4 would shorten it too),
    // keep the migration in its first round long enough for a loaded machine's status polls to see it there.
    const migrating = livemig(['migrate', '--control', srcControl, '--to', JSON.parse(dstLine).incoming, '--max-bandwidth', '10Mbit', '--strategy', 'baseline', '--compress', 'off']);
    await waitFor(async () => {
      const st = await livemig(['status', '--control', dstControl, '--json']);
      return st.code === 0 && JSON.parse(st.stdout).incoming?.phase === 'receiving';
    }, 'the destination to receive pages', 120_000);
    dst.kill('SIGKILL');
    const r = await migrating;
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /^livemig: .*\[MIGRATE_LINK_LOST\]$/m);
    const s = JSON.parse((await livemig(['status', '--control', srcControl, '--json'])).stdout);
    assert.equal(s.state, 'running');
    assert.equal(s.migration.state, 'failed');
    // The map is intact: every mapping checked against the disk.
    await livemig(['pause', '--control', srcControl]);
    const dump = JSON.parse((await livemig(['dump-memory', '--control', srcControl, '--out', join(dir.path, 'kill.mem'), '--json'])).stdout);
    const v = await run(process.execPath, [join(REPO, 'bin/p2b.js'), 'verify', dump.map, '--memory', join(dir.path, 'kill.mem'), '--storage', disk.uri, '--json']);
    assert.equal(v.code, 0, v.stdout);
    assert.ok(JSON.parse(v.stdout).checked > 1000);
    // Memory and disk as if no migration had been tried.
    await assertNothingLost(overControl(srcControl, { memoryBytes: 32 * MiB, workload: 'pagecache', options: { seed: 1 } }), disk, dir.path);
  } finally {
    dst.kill('SIGKILL');
    await livemig(['stop', '--control', srcControl]);
    await srcExited;
    await disk.server.stop();
  }
});

test('a link cut mid-migration fails with MIGRATE_LINK_LOST, the source guest runs on with nothing lost', async () => {
  const disk = await ownDisk(dir.path, base, 'cut');
  const g = await startWarmGuest(dir.path, 'cut', disk.uri, 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: disk.uri, stateDir: () => join(dir.path, 'cut-dst') });
  // Cut while round 0 is on its way: after the 20th PAGES frame.
  let pages = 0;
  const tap = await startFrameTap(incoming.port, (_, name) => (name === 'PAGES' && ++pages === 20 ? 'cut' : 'pass'));
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port, maxBandwidth: 5_000_000 }), failsWith('MIGRATE_LINK_LOST'));
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

test('a link cut in stop-and-copy: the source cannot know how far its frames got, says MIGRATE_OUTCOME_UNKNOWN and stays paused; the destination, short of DIGESTS, runs nothing; resuming the source loses nothing', async () => {
  const disk = await ownDisk(dir.path, base, 'cutpause');
  const g = await startWarmGuest(dir.path, 'cutpause', disk.uri, 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: disk.uri, stateDir: () => join(dir.path, 'cutpause-dst') });
  const tap = await startFrameTap(incoming.port, (dir, name) => (dir === 'toDestination' && name === 'DEVICE_STATE' ? 'cut' : 'pass'));
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port }), failsWith('MIGRATE_OUTCOME_UNKNOWN'));
    assert.ok(tap.seen.toDestination.includes('DEVICE_STATE'), 'the link was cut in stop-and-copy');
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up');
    assert.equal((await g.status()).state, 'paused');
    await g.resume(); // the operator's move, once the destination runs nothing
    await assertRunsOn(g);
    await assertNothingLost(g, disk, dir.path);
  } finally {
    tap.close();
    incoming.close();
    await g.stop();
    await disk.server.stop();
  }
});

test('a drain that outlasts the source\'s patience: MIGRATE_OUTCOME_UNKNOWN, neither side runs, and resuming the source loses nothing', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const disk = await ownDisk(dir.path, base, 'drain');
  // The destination's reads take 2 s each, and a generous downtime limit lets the source stop with
  // the fetch backlog of round 0 still owed: draining it outlasts the source's 1 s wait for RESUMED.
  const slow = await startNbdkit(dir.path, 'file', [disk.image, 'delay-read=2000ms'], ['--filter=delay', '--readonly']);
  const g = await startWarmGuest(dir.path, 'drain', disk.uri, 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: slow.uri(), stateDir: () => join(dir.path, 'drain-dst') });
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port, downtimeLimitMs: 60_000, completeTimeoutMs: 1000 }), (e: unknown) =>
      failsWith('MIGRATE_OUTCOME_UNKNOWN')(e) && /did not resume within 1000 ms.*check the destination/.test((e as Error).message));
    assert.equal((await g.status()).state, 'paused', 'the source does not resume on its own: the destination might have');
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up once the source is gone', 60_000);
    // The operator sees that the destination runs nothing, and resumes the source.
    await g.resume();
    await assertRunsOn(g);
    await assertNothingLost(g, disk, dir.path);
  } finally {
    incoming.close();
    await g.stop();
    await slow.stop();
    await disk.server.stop();
  }
});

test('a lost RESUMED (docs/protocol.md, "Known gap"): the destination runs the guest, the source stays paused and says MIGRATE_OUTCOME_UNKNOWN', async () => {
  const disk = await ownDisk(dir.path, base, 'lost');
  const g = await startWarmGuest(dir.path, 'lost', disk.uri, 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: disk.uri, stateDir: () => join(dir.path, 'lost-dst') });
  const tap = await startFrameTap(incoming.port, (dir, name) => (dir === 'toSource' && name === 'RESUMED' ? 'drop' : 'pass'));
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: tap.port, completeTimeoutMs: 3000 }), failsWith('MIGRATE_OUTCOME_UNKNOWN'));
    const destination = await incoming.guest;
    try {
      assert.equal((await destination.status()).state, 'running', 'the destination has the guest');
      assert.equal((await g.status()).state, 'paused', 'and the source does not run it too');
      // The source cannot take the disk's lock-free NBD export back by itself; the operator stops it.
    } finally {
      await destination.stop();
    }
  } finally {
    tap.close();
    incoming.close();
    await g.stop();
    await disk.server.stop();
  }
});

test("the destination's NBD server stopped during the fetch: the migration fails cleanly, the source runs on with nothing lost", async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const disk = await ownDisk(dir.path, base, 'nbdstop');
  // The destination reaches the disk through its own nbdkit, slowed so the fetch is still going when it dies.
  const slow = await startNbdkit(dir.path, 'file', [disk.image, 'delay-read=50ms'], ['--filter=delay', '--readonly']);
  const g = await startWarmGuest(dir.path, 'nbdstop', disk.uri, 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: slow.uri(), stateDir: () => join(dir.path, 'nbdstop-dst') });
  try {
    // Killed once round 0 has gone out: thousands of references are still waiting for their reads.
    const migrating = migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port, onRound: (r) => r.round === 0 && slow.process.kill('SIGKILL') });
    await assert.rejects(migrating, (e: unknown) => failsWith(['MIGRATE_STORAGE', 'MIGRATE_LINK_LOST'])(e) && /disk|storage|link/i.test((e as Error).message));
    await assertRunsOn(g);
    await assertNothingLost(g, disk, dir.path);
  } finally {
    incoming.close();
    await slow.stop();
    await g.stop();
    await disk.server.stop();
  }
});

test('blocks corrupted on storage behind livemig\'s back are caught by the keyed hash, re-sent in full, and counted', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const copy = join(dir.path, 'corrupt.img');
  copyFileSync(base, copy);
  const server = await startNbdServe(['--export', `disk=${copy}`]);
  const slow = await startNbdkit(dir.path, 'file', [copy, 'delay-read=20ms'], ['--filter=delay', '--readonly']);
  const g = await startWarmGuest(dir.path, 'corrupt', server.uri('disk'), 'pagecache');
  try {
    // Blocks the source will send as references; corrupted once round 0 is on its way, before the slowed fetch reads them.
    const targets: number[] = [];
    for (let p = 0; p < g.map.pages && targets.length < 400; p += 7) if (g.map.state[p] === P2B.READ) targets.push(g.map.block[p]);
    let corrupted = false;
    const m = await migrateGuest(dir.path, g, 'p2b', {
      destinationDisk: slow.uri(),
      onRound: (r) => {
        if (r.round !== 0 || corrupted) return;
        corrupted = true;
        const fd = openSync(copy, 'r+');
        for (const b of targets) writeSync(fd, randomBytes(64), 0, 64, b * 4096 + 100);
        closeSync(fd);
      },
    });
    try {
      assert.equal(m.result.verified, true, 'memory verified despite the corruption');
      assert.equal(m.oracle.equal, true);
      assert.ok(m.result.pages.refRetried > 0, `mismatches re-sent (${m.result.pages.refRetried})`);
      assert.equal((await m.destination.status()).state, 'running');
    } finally {
      await m.destination.stop();
    }
  } finally {
    await slow.stop();
    await server.stop();
  }
});

test('a peer of another protocol version is refused with MIGRATE_VERSION, and the destination stays ready', async () => {
  const disk = await ownDisk(dir.path, base, 'ver');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, hold: true, disk: disk.uri, stateDir: () => join(dir.path, 'ver-dst') });
  try {
    const c = await Channel.connect('127.0.0.1', incoming.port);
    const hello = {
      protocol: 'livemig' as const, versionMin: 7, versionMax: 9, capabilities: ['pages.full', 'pages.zero', 'return-path'], key: '00'.repeat(32), strategy: 'p2b',
      guest: { name: 'v', workload: 'idle', options: {}, memoryBytes: 4096, pageSize: 4096, regions: [{ firstPage: 0, pages: 1 }] },
      storage: { spec: disk.uri, description: 'd', size: 4096, sample: [] },
    };
    await c.send({ name: 'HELLO', body: hello });
    await assert.rejects(c.expect('WELCOME', 10_000), (e: unknown) => failsWith('MIGRATE_VERSION')(e) && /7\.\.9/.test((e as Error).message));
    c.destroy();
    // A real source can still migrate to it afterwards.
    const g = await startWarmGuest(dir.path, 'ver', disk.uri, 'idle');
    const r = await migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port, keepPaused: true });
    assert.equal(r.verified, true);
    const destination = await incoming.guest;
    assert.equal((await checkSwitchover(g, destination)).equal, true);
    await destination.stop();
  } finally {
    incoming.close();
    await disk.server.stop();
  }
});

test('a destination whose disk is another disk of the same size refuses the guest with MIGRATE_STORAGE, reads nothing more for it, and the source runs on with nothing lost', async () => {
  const disk = await ownDisk(dir.path, base, 'mismatch');
  const other = join(dir.path, 'other.img');
  randomImage(other, 64 * MiB);
  const otherServer = await startNbdServe(['--export', `disk=${other}`]);
  const g = await startWarmGuest(dir.path, 'mismatch', disk.uri, 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: otherServer.uri('disk'), stateDir: () => join(dir.path, 'mismatch-dst') });
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port }),
      (e: unknown) => failsWith('MIGRATE_STORAGE')(e) && /not this destination's disk .*: \d+ of \d+ sampled block\(s\) differ/.test((e as Error).message));
    await assertRunsOn(g);
    await assertNothingLost(g, disk, dir.path);
  } finally {
    await g.stop().catch(() => {}); // its worker would keep this file's process alive
    incoming.close();
    await otherServer.stop();
    await disk.server.stop();
  }
});

test('a destination prepared for another memory size refuses the guest with MIGRATE_LAYOUT, nothing lost; one prepared for its size takes it', async () => {
  const disk = await ownDisk(dir.path, base, 'prepared');
  const g = await startWarmGuest(dir.path, 'prepared', disk.uri, 'pagecache'); // 32 MiB
  const wrong = await listenIncoming({ host: '127.0.0.1', port: 0, disk: disk.uri, stateDir: () => join(dir.path, 'prep-wrong'), memoryBytes: 64 * MiB });
  const right = await listenIncoming({ host: '127.0.0.1', port: 0, hold: true, disk: disk.uri, stateDir: () => join(dir.path, 'prep-right'), memoryBytes: 32 * MiB });
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: wrong.port }), (e: unknown) => failsWith('MIGRATE_LAYOUT')(e) && /67108864/.test((e as Error).message));
    await assertRunsOn(g);
    await assertNothingLost(g, disk, dir.path);
    const r = await migrate(g, { ...opts, host: '127.0.0.1', port: right.port, keepPaused: true });
    assert.equal(r.verified, true);
    assert.ok(r.pages.ref > 0);
    const destination = await right.guest;
    assert.equal((await checkSwitchover(g, destination)).equal, true);
    await destination.stop();
  } finally {
    wrong.close();
    right.close();
    await disk.server.stop();
  }
});
