/**
 * `livemig nbd serve --content-index` as a user runs it: a separate process read
 * by nbdcopy and written by qemu-io, queried over its socket by the client the
 * QEMU stream proxy uses, inspected with the `p2b` tool, stopped cleanly and killed.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import Database from 'better-sqlite3';
import { startNbdServe, type ServeProcess } from '../helpers/nbd-serve.ts';
import { run, livemig, tempDir, REPO } from '../helpers/processes.ts';
import { requireTools } from '../helpers/tools.ts';
import { ContentIndexClient } from '../../src/storage/content-index/client.ts';
import { LivemigError } from '../../src/errors.ts';
import { MAX_LINE } from '../../src/storage/content-index/query-protocol.ts';

const dir = tempDir();
after(() => dir.cleanup());
const B = 4096;
const BLOCKS = 512;
const P2B = join(REPO, 'bin/p2b.js');
const p2b = (args: string[]) => run(process.execPath, [P2B, ...args]);

function image(name: string): { path: string; content: Buffer } {
  const path = join(dir.path, name);
  const content = randomFillSync(Buffer.alloc(BLOCKS * B));
  writeFileSync(path, content);
  return { path, content };
}

async function serveIndexed(img: string, idx: string, sock: string): Promise<ServeProcess> {
  return startNbdServe(['--export', `vm1=${img}`, '--content-index', idx, '--content-index-listen', `unix:${sock}`]);
}

test('reads by nbdcopy fill the index, a qemu-io write replaces an entry, and the proxy client finds pages by content', async (t) => {
  if (!requireTools(t, 'nbdcopy', 'qemu-io')) return;
  const { path, content } = image('query.img');
  const sock = join(dir.path, 'q1.sock');
  const srv = await serveIndexed(path, join(dir.path, 'idx1'), sock);
  try {
    const copy = await run('nbdcopy', [srv.uri('vm1'), 'null:']);
    assert.equal(copy.code, 0, copy.stderr);
    const client = await ContentIndexClient.connect(`unix:${sock}`, 'vm1');
    assert.equal(client.info.blocks, BLOCKS);
    const found = await client.lookupPages(content);
    assert.deepEqual([...found], Array.from({ length: BLOCKS }, (_, i) => i), 'every block found where it is');
    const stranger = randomFillSync(Buffer.alloc(2 * B));
    assert.deepEqual([...(await client.lookupPages(stranger))], [-1, -1]);

    const io = await run('qemu-io', ['-f', 'raw', '-c', `write -P 0x55 ${7 * B} ${B}`, srv.uri('vm1')]);
    assert.equal(io.code, 0, io.stderr);
    const [written, old] = await client.lookupPages(Buffer.concat([Buffer.alloc(B, 0x55), content.subarray(7 * B, 8 * B)]));
    assert.equal(written, 7, 'the written block is indexed by its new content');
    assert.equal(old, -1, 'its old content is gone');

    const stats = await client.stats();
    assert.equal(stats.entries, BLOCKS);
    assert.equal(stats.counters.recordedByWrite, 1);
    client.close();
  } finally {
    await srv.stop();
  }
});

test('a batch larger than one request is split and answered in order', async () => {
  const { path, content } = image('batch.img');
  const sock = join(dir.path, 'q2.sock');
  const srv = await serveIndexed(path, join(dir.path, 'idx2'), sock);
  try {
    const { NbdClient } = await import('../../nbd/index.ts');
    const nbd = await NbdClient.connect(srv.uri('vm1'));
    await nbd.read(0, BLOCKS * B);
    await nbd.close();
    const client = await ContentIndexClient.connect(`unix:${sock}`, 'vm1');
    const pairs = client.hashPages(content);
    const many = new Uint32Array(2 * 70_000); // more than MAX_HASHES: two requests
    for (let i = 0; i < 70_000; i++) many.set(pairs.subarray(2 * (i % BLOCKS), 2 * (i % BLOCKS) + 2), 2 * i);
    const blocks = await client.lookup(many);
    assert.equal(blocks.length, 70_000);
    for (let i = 0; i < 70_000; i += 997) assert.equal(blocks[i], i % BLOCKS);
    client.close();
  } finally {
    await srv.stop();
  }
});

/** Sends raw lines to the query socket and collects the reply lines. */
async function rawExchange(sock: string, payload: string, replies: number): Promise<{ lines: string[]; closed: boolean }> {
  const s = net.connect(sock);
  await once(s, 'connect');
  let buf = '';
  let closed = false;
  s.on('data', (d) => (buf += d));
  s.on('close', () => (closed = true));
  s.write(payload);
  const deadline = Date.now() + 10_000;
  while (buf.split('\n').length - 1 < replies && !closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  s.destroy();
  return { lines: buf.split('\n').filter(Boolean), closed };
}

test('bad queries get one error line each with a stable code; an over-long line closes the connection', async () => {
  const { path } = image('bad.img');
  const sock = join(dir.path, 'q3.sock');
  const srv = await serveIndexed(path, join(dir.path, 'idx3'), sock);
  try {
    const requests = [
      'not json',
      JSON.stringify({ id: 1, op: 'lookup', export: 'vm1', hashes: 'zz'.repeat(8) }),
      JSON.stringify({ id: 2, op: 'lookup', export: 'vm1', hashes: '0123' }),
      JSON.stringify({ id: 3, op: 'lookup', export: 'nope', hashes: '' }),
      JSON.stringify({ id: 4, op: 'frobnicate' }),
      JSON.stringify({ id: 5, op: 'lookup', export: 'vm1', hashes: '00'.repeat(8) }),
    ];
    const { lines } = await rawExchange(sock, requests.join('\n') + '\n', requests.length);
    const replies = lines.map((l) => JSON.parse(l));
    assert.deepEqual(replies.map((r) => r.code ?? 'ok'), ['CINDEX_BAD_REQUEST', 'CINDEX_BAD_REQUEST', 'CINDEX_BAD_REQUEST', 'CINDEX_NO_EXPORT', 'CINDEX_BAD_REQUEST', 'ok']);
    assert.deepEqual(replies[5].blocks, [-1]);
    const long = await rawExchange(sock, 'x'.repeat(MAX_LINE + 10), 1);
    assert.equal(JSON.parse(long.lines[0]).code, 'CINDEX_PROTOCOL');
    await assert.rejects(ContentIndexClient.connect(`unix:${sock}`, 'other'), (e: unknown) => e instanceof LivemigError && e.code === 'CINDEX_NO_EXPORT');
    await assert.rejects(ContentIndexClient.connect(`unix:${join(dir.path, 'absent.sock')}`, 'vm1'), (e: unknown) => (e as LivemigError).code === 'CINDEX_CONNECT_FAILED');
  } finally {
    await srv.stop();
  }
});

test('the p2b tool reads an index database: stats, dump, lookup, and verify that fails once the image changes behind it', async () => {
  const { path } = image('tool.img');
  const idx = join(dir.path, 'idx4');
  const srv = await serveIndexed(path, idx, join(dir.path, 'q4.sock'));
  const { NbdClient } = await import('../../nbd/index.ts');
  const nbd = await NbdClient.connect(srv.uri('vm1'));
  await nbd.read(0, 64 * B);
  await nbd.close();
  await srv.stop(); // SIGTERM: a clean close
  const db = join(idx, 'vm1.cindex.sqlite');

  const stats = await p2b(['stats', db, '--json']);
  assert.equal(stats.code, 0, stats.stderr);
  const s = JSON.parse(stats.stdout);
  assert.deepEqual([s.kind, s.export, s.entries, s.clean, s.counters.recordedByRead], ['content-index', 'vm1', 64, true, 64]);

  const dump = await p2b(['dump', db, '--json']);
  const rows = dump.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(rows.map((r) => r.block), Array.from({ length: 64 }, (_, i) => i));

  const byHash = await p2b(['lookup', db, '--hash', rows[9].hash, '--json']);
  assert.deepEqual(JSON.parse(byHash.stdout), [{ hash: rows[9].hash, block: 9 }]);
  assert.equal((await p2b(['lookup', db, '--block', '100'])).code, 1, 'an unindexed block: exit 1');
  assert.equal((await p2b(['lookup', db, '--page', '1'])).code, 2, 'pages are for p2b maps: usage error');

  const ok = await p2b(['verify', db, '--json']);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout).matched, 64);
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(B, 7), 0, B, 12 * B); // someone writes block 12 while no server runs
  closeSync(fd);
  const bad = await p2b(['verify', db, '--json']);
  assert.equal(bad.code, 1);
  const v = JSON.parse(bad.stdout);
  assert.deepEqual([v.stale, v.listed[0].block], [1, 12]);

  // And the server, started again, does not trust it.
  const again = await serveIndexed(path, idx, join(dir.path, 'q4b.sock'));
  const info = again.info as unknown as { exports: { contentIndex: { reloaded: number; reloadRefused: string } }[] };
  assert.equal(info.exports[0].contentIndex.reloaded, 0);
  assert.match(info.exports[0].contentIndex.reloadRefused, /image changed/);
  await again.stop();
});

test('a killed server leaves an index that the next start refuses to reload; a clean stop is reloaded', async () => {
  const { path } = image('killed.img');
  const idx = join(dir.path, 'idx5');
  const { NbdClient } = await import('../../nbd/index.ts');
  const readAll = async (srv: ServeProcess) => {
    const nbd = await NbdClient.connect(srv.uri('vm1'));
    await nbd.read(0, BLOCKS * B);
    await nbd.close();
  };
  let srv = await serveIndexed(path, idx, join(dir.path, 'q5.sock'));
  await readAll(srv);
  await srv.stop();
  srv = await serveIndexed(path, idx, join(dir.path, 'q5.sock'));
  const info = srv.info as unknown as { exports: { contentIndex: { reloaded: number } }[] };
  assert.equal(info.exports[0].contentIndex.reloaded, BLOCKS);
  srv.process.kill('SIGKILL');
  await once(srv.process, 'exit');
  srv = await serveIndexed(path, idx, join(dir.path, 'q5.sock'));
  const after = srv.info as unknown as { exports: { contentIndex: { reloaded: number; reloadRefused: string } }[] };
  assert.deepEqual([after.exports[0].contentIndex.reloaded, after.exports[0].contentIndex.reloadRefused], [0, 'not closed cleanly']);
  await srv.stop();
});

test('nbd serve refuses a foreign file where an index should be, and bad index options, in one line', async () => {
  const { path } = image('foreign.img');
  const idx = join(dir.path, 'idx6');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(idx);
  const db = new Database(join(idx, 'vm1.cindex.sqlite'));
  db.exec('CREATE TABLE precious (x)');
  db.close();
  const r = await livemig(['nbd', 'serve', '--export', `vm1=${path}`, '--listen', 'tcp://127.0.0.1:0', '--content-index', idx]);
  assert.equal(r.code, 1);
  assert.match(r.stderr.trim(), /^livemig: .*not a livemig content index database.*\[CINDEX_FOREIGN_FILE\]$/);
  const usage = [
    [['--content-index-max', '10'], /need --content-index DIR/],
    [['--content-index', idx, '--content-index-max', 'lots'], /--content-index-max must be an integer/],
    [['--content-index', idx, '--content-index-listen', 'bogus'], /expected tcp:\/\/HOST:PORT or unix:PATH/],
  ] as const;
  for (const [args, pattern] of usage) {
    const u = await livemig(['nbd', 'serve', '--export', `vm1=${path}`, ...args]);
    assert.equal(u.code, 2, u.stderr);
    assert.match(u.stderr, pattern);
  }
});
