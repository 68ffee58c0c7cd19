import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { PageBatch, decodePages, encodePageRequest, decodePageRequest, type PageEntry } from '../../src/wire/pages.ts';
import { ENCODING, FRAME, WireError, PAGE_ENTRY_HEADER, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN } from '../../src/wire/frames.ts';
import { chooseVersion, pageHash } from '../../src/wire/handshake.ts';
import { Connection } from '../../src/wire/connection.ts';

test('a page batch decodes to what was added, in order', () => {
  const b = new PageBatch(4);
  const data = Buffer.alloc(4096, 7);
  b.addFull(3, 10, data);
  b.addZero(4, 11);
  b.addRef(5, 12, 123456789012, Buffer.alloc(16, 9));
  b.addRefRun(6, 13, 5000, 64, Buffer.alloc(16, 8));
  assert.equal(b.count, 4);
  assert.deepEqual(b.counts, { full: 1, zero: 1, ref: 65 }, 'a run counts its pages');
  const out: PageEntry[] = [];
  const payload = b.take();
  b.addZero(1, 1); // the next batch must not overwrite the payload handed out
  decodePages(payload, 100, (e) => out.push(e));
  assert.deepEqual(out.map((e) => [e.page, e.seq, e.encoding]), [[3, 10, ENCODING.FULL], [4, 11, ENCODING.ZERO], [5, 12, ENCODING.REF], [6, 13, ENCODING.REF_RUN]]);
  assert.ok(Buffer.from((out[0] as { data: Uint8Array }).data).equals(data));
  assert.equal((out[2] as { block: number }).block, 123456789012);
  const run = out[3] as { block: number; count: number; hash: Uint8Array };
  assert.deepEqual([run.block, run.count, Buffer.from(run.hash).equals(Buffer.alloc(16, 8))], [5000, 64, true]);
});

test('a reference run longer than the limit, empty, or past the end of memory is a protocol error', () => {
  for (const [page, count] of [[0, 65], [0, 0], [90, 11]]) {
    const b = new PageBatch(1);
    b.addRefRun(page, 1, 0, count, Buffer.alloc(16));
    assert.throws(() => decodePages(b.take(), 100, () => {}), (e: unknown) => e instanceof WireError && e.code === 'MIGRATE_PROTOCOL' && /reference run/.test((e as Error).message));
  }
});

test('an unknown encoding is skipped by its length, and later entries still decode', () => {
  const b = new PageBatch(4);
  b.addZero(1, 1);
  const payload = b.take();
  // Splice in an entry with encoding 99 and a 5-byte body before the zero entry.
  const odd = Buffer.alloc(PAGE_ENTRY_HEADER + 5);
  odd.writeUInt32BE(2, 0);
  odd.writeUInt32BE(2, 4);
  odd.writeUInt8(99, 8);
  odd.writeUInt16BE(5, 10);
  const both = Buffer.concat([Buffer.from([0, 0, 0, 2]), odd, payload.subarray(4)]);
  const out: PageEntry[] = [];
  decodePages(both, 10, (e) => out.push(e));
  assert.deepEqual(out.map((e) => [e.page, e.encoding, 'unknown' in e]), [[2, 99, true], [1, ENCODING.ZERO, false]]);
});

test('malformed page batches are protocol errors, never guesses', () => {
  const b = new PageBatch(2);
  b.addFull(1, 1, Buffer.alloc(4096));
  const p = b.take();
  const isProto = (e: unknown) => e instanceof WireError && e.code === 'MIGRATE_PROTOCOL';
  assert.throws(() => decodePages(p.subarray(0, 100), 10, () => {}), isProto);
  assert.throws(() => decodePages(p, 1, () => {}), /outside guest memory/);
  const bad = Buffer.from(p);
  bad.writeUInt16BE(100, 4 + 10); // a full page that claims 100 bytes
  assert.throws(() => decodePages(bad, 10, () => {}), isProto);
  assert.throws(() => decodePages(Buffer.alloc(2), 10, () => {}), isProto);
});

test('page requests round-trip and are bounds-checked', () => {
  assert.deepEqual(decodePageRequest(encodePageRequest([1, 5, 9]), 10), [1, 5, 9]);
  assert.throws(() => decodePageRequest(encodePageRequest([10]), 10), /outside guest memory/);
  assert.throws(() => decodePageRequest(Buffer.from([0, 0, 0, 3, 1]), 10), /malformed/);
});

test('version negotiation takes the highest common version or refuses with both windows', () => {
  assert.equal(chooseVersion({ versionMin: PROTOCOL_VERSION_MIN, versionMax: PROTOCOL_VERSION + 3 }), PROTOCOL_VERSION);
  assert.equal(chooseVersion({ versionMin: 1, versionMax: PROTOCOL_VERSION }), PROTOCOL_VERSION);
  // Version 1 digested whole regions; a peer that speaks only it is refused, naming both windows.
  assert.throws(() => chooseVersion({ versionMin: 1, versionMax: 1 }), (e: unknown) => e instanceof WireError && e.code === 'MIGRATE_VERSION' && /1\.\.1/.test(e.message) && /2\.\.2/.test(e.message));
  assert.throws(() => chooseVersion({ versionMin: PROTOCOL_VERSION + 1, versionMax: 9 }), (e: unknown) => e instanceof WireError && e.code === 'MIGRATE_VERSION');
});

test('page hashes are keyed: another key gives another hash', () => {
  const page = Buffer.alloc(4096, 1);
  assert.equal(pageHash(Buffer.alloc(32, 1), page).length, 16);
  assert.notDeepEqual(pageHash(Buffer.alloc(32, 1), page), pageHash(Buffer.alloc(32, 2), page));
});

test('frames with type 0, an unknown type or an oversized length end the connection with a protocol error', async () => {
  for (const header of [[0, 0, 0, 0, 0, 0, 0, 0], [0, 200, 0, 0, 0, 0, 0, 0], [0, FRAME.PAGES, 0, 0, 0x7f, 0, 0, 0]]) {
    const server = net.createServer((s) => s.end(Buffer.from(header)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const c = await Connection.connect('127.0.0.1', (server.address() as net.AddressInfo).port);
    await assert.rejects(c.read(), (e: unknown) => e instanceof WireError && e.code === 'MIGRATE_PROTOCOL');
    c.destroy();
    server.close();
  }
});
