/**
 * What must not lose anything: a dying destination, a cut link, storage that
 * vanishes or changes behind livemig's back, a peer of another version, a
 * destination that sees other storage. The source guest keeps running, intact.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { copyFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { LivemigError } from '../../src/errors.ts';
import { Channel } from '../../src/wire/index.ts';
import { P2B } from '../../src/p2b/map.ts';
import type { Guest } from '../../src/guest/guest.ts';
import { requireTools } from '../helpers/tools.ts';
import { tempDir, startNbdkit, livemig, run, LIVEMIG, REPO } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startNbdServe, type ServeProcess } from '../helpers/nbd-serve.ts';
import { startWarmGuest, migrateGuest, checkSwitchover } from '../helpers/migration.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const image = join(dir.path, 'disk.img');
let nbd: ServeProcess;
before(async () => {
  randomImage(image, 96 * MiB);
  nbd = await startNbdServe(['--export', `disk=${image}`]);
});
after(async () => {
  await nbd?.stop();
  dir.cleanup();
});

const base = { strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const };

async function assertStillRunning(g: Guest): Promise<void> {
  const before = await g.status();
  assert.equal(before.state, 'running');
  await delay(200);
  assert.ok((await g.status()).steps > before.steps, 'the source guest keeps running');
}

test('a destination killed mid-round: migrate exits 1 with one line, the source runs on with memory and map intact', async () => {
  const dstControl = join(dir.path, 'kill-dst.sock');
  const srcControl = join(dir.path, 'kill-src.sock');
  const dst = spawn(process.execPath, [LIVEMIG, 'run', '--incoming', 'tcp://127.0.0.1:0', '--control', dstControl, '--state-dir', join(dir.path, 'kill-dst'), '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const src = spawn(process.execPath, [LIVEMIG, 'run', '--name', 'k', '--memory', '32MiB', '--disk', nbd.uri('disk'), '--workload', 'pagecache',
    '--control', srcControl, '--state-dir', join(dir.path, 'kill-src'), '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const srcExited = new Promise((r) => src.once('exit', r));
  try {
    const [dstLine] = (await once(createInterface({ input: dst.stdout! }), 'line')) as [string];
    await once(createInterface({ input: src.stdout! }), 'line');
    await delay(1500);
    // A slow link keeps the migration in its first round long enough to kill the destination there.
    const migrating = livemig(['migrate', '--control', srcControl, '--to', JSON.parse(dstLine).incoming, '--max-bandwidth', '10Mbit']);
    // Kill it once it is receiving pages, however long the migrate command took to start.
    for (let i = 0; i < 600; i++) {
      const st = await livemig(['status', '--control', dstControl, '--json']);
      if (st.code === 0 && JSON.parse(st.stdout).incoming?.phase === 'receiving') break;
      await delay(50);
    }
    dst.kill('SIGKILL');
    const r = await migrating;
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /^livemig: .*\[MIGRATE_LINK_LOST\]$/m);
    const s = JSON.parse((await livemig(['status', '--control', srcControl, '--json'])).stdout);
    assert.equal(s.state, 'running');
    assert.equal(s.migration.state, 'failed');
    // Memory and map intact: pause, dump, verify every mapping against the disk.
    await livemig(['pause', '--control', srcControl]);
    const dump = JSON.parse((await livemig(['dump-memory', '--control', srcControl, '--out', join(dir.path, 'kill.mem'), '--json'])).stdout);
    const v = await run(process.execPath, [join(REPO, 'bin/p2b.js'), 'verify', dump.map, '--memory', join(dir.path, 'kill.mem'), '--storage', nbd.uri('disk'), '--json']);
    assert.equal(v.code, 0, v.stdout);
    assert.ok(JSON.parse(v.stdout).checked > 1000);
    assert.equal(JSON.parse((await livemig(['resume', '--control', srcControl, '--json'])).stdout).state, 'running');
  } finally {
    dst.kill('SIGKILL');
    await livemig(['stop', '--control', srcControl]);
    await srcExited;
  }
});

test('a link cut mid-migration fails with MIGRATE_LINK_LOST and the source guest resumes', async () => {
  const g = await startWarmGuest(dir.path, 'cut', nbd.uri('disk'), 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, stateDir: () => join(dir.path, 'cut-dst') });
  // A real TCP hop between the agents, so the link can be cut without killing either.
  const sockets: net.Socket[] = [];
  const proxy = net.createServer((client) => {
    const upstream = net.connect(incoming.port, '127.0.0.1');
    sockets.push(client, upstream);
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.pipe(upstream).pipe(client);
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  try {
    const migrating = migrate(g, { ...base, host: '127.0.0.1', port: (proxy.address() as net.AddressInfo).port, maxBandwidth: 5_000_000 });
    await delay(600);
    for (const s of sockets) s.destroy();
    await assert.rejects(migrating, (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_LINK_LOST');
    await assertStillRunning(g);
  } finally {
    proxy.close();
    incoming.close();
    await g.stop();
  }
});

test("the destination's NBD server stopped during the fetch: the migration fails cleanly, the source runs on", async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  // The destination reaches the disk through its own nbdkit, slowed so the fetch is still going when it dies.
  const slow = await startNbdkit(dir.path, 'file', [image, 'delay-read=50ms'], ['--filter=delay', '--readonly']);
  const g = await startWarmGuest(dir.path, 'nbdstop', nbd.uri('disk'), 'pagecache');
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: slow.uri(), stateDir: () => join(dir.path, 'nbdstop-dst') });
  try {
    // Killed once round 0 has gone out: thousands of references are still waiting for their reads.
    const migrating = migrate(g, { ...base, host: '127.0.0.1', port: incoming.port, onRound: (r) => r.round === 0 && slow.process.kill('SIGKILL') });
    await assert.rejects(migrating, (e: unknown) => e instanceof LivemigError && /MIGRATE_STORAGE|MIGRATE_LINK_LOST/.test(e.code) && /disk|storage|link/i.test(e.message));
    await assertStillRunning(g);
  } finally {
    incoming.close();
    await slow.stop();
    await g.stop();
  }
});

test('blocks corrupted on storage behind livemig\'s back are caught by the keyed hash, re-sent in full, and counted', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const copy = join(dir.path, 'corrupt.img');
  copyFileSync(image, copy);
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
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, hold: true, stateDir: () => join(dir.path, 'ver-dst') });
  try {
    const c = await Channel.connect('127.0.0.1', incoming.port);
    const hello = {
      protocol: 'livemig' as const, versionMin: 7, versionMax: 9, capabilities: ['pages.full', 'pages.zero', 'return-path'], key: '00'.repeat(32), strategy: 'p2b',
      guest: { name: 'v', workload: 'idle', options: {}, memoryBytes: 4096, pageSize: 4096, regions: [{ firstPage: 0, pages: 1 }] },
      storage: { spec: nbd.uri('disk'), description: 'd', size: 4096, sample: [] },
    };
    await c.send({ name: 'HELLO', body: hello });
    await assert.rejects(c.expect('WELCOME', 10_000), (e: unknown) => (e as { code: string }).code === 'MIGRATE_VERSION' && /7\.\.9/.test((e as Error).message));
    c.destroy();
    // A real source can still migrate to it afterwards.
    const g = await startWarmGuest(dir.path, 'ver', nbd.uri('disk'), 'idle');
    const r = await migrate(g, { ...base, host: '127.0.0.1', port: incoming.port, keepPaused: true });
    assert.equal(r.verified, true);
    const destination = await incoming.guest;
    assert.equal((await checkSwitchover(g, destination)).equal, true);
    await destination.stop();
  } finally {
    incoming.close();
  }
});

test('a destination that sees other storage refuses references: full pages, still verified, and it says why', async () => {
  const other = join(dir.path, 'other.img');
  randomImage(other, 96 * MiB);
  const otherServer = await startNbdServe(['--export', `disk=${other}`]);
  const g = await startWarmGuest(dir.path, 'mismatch', nbd.uri('disk'), 'pagecache');
  try {
    const m = await migrateGuest(dir.path, g, 'p2b', { destinationDisk: otherServer.uri('disk') });
    try {
      assert.equal(m.result.storageMatch, false);
      assert.match(m.result.storageReason!, /block \d+ differs/);
      assert.equal(m.result.pages.ref, 0);
      assert.equal(m.result.verified, true);
    } finally {
      await m.destination.stop();
    }
  } finally {
    await otherServer.stop();
  }
});

test('a destination prepared for another memory size refuses the guest with MIGRATE_LAYOUT; one prepared for its size takes it', async () => {
  const g = await startWarmGuest(dir.path, 'prepared', nbd.uri('disk'), 'pagecache'); // 32 MiB
  const wrong = await listenIncoming({ host: '127.0.0.1', port: 0, stateDir: () => join(dir.path, 'prep-wrong'), memoryBytes: 64 * MiB });
  const right = await listenIncoming({ host: '127.0.0.1', port: 0, hold: true, stateDir: () => join(dir.path, 'prep-right'), memoryBytes: 32 * MiB });
  try {
    await assert.rejects(migrate(g, { ...base, host: '127.0.0.1', port: wrong.port }), (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_LAYOUT' && /67108864/.test(e.message));
    assert.equal((await g.status()).state, 'running', 'the source keeps its guest');
    const r = await migrate(g, { ...base, strategy: 'p2b', host: '127.0.0.1', port: right.port, keepPaused: true });
    assert.equal(r.verified, true);
    assert.ok(r.pages.ref > 0);
    const destination = await right.guest;
    assert.equal((await checkSwitchover(g, destination)).equal, true);
    await destination.stop();
  } finally {
    wrong.close();
    right.close();
  }
});
