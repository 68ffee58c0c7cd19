/** The protocol module's codecs: what is built decodes to the same thing, and what is malformed is refused. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { LivemigError } from '../../src/errors.ts';
import {
  PageBatch, decodePages, encodePageRequest, decodePageRequest, encodeMap, decodeMap, Channel, chooseVersion, pageHash,
  ENCODING, FRAMES, MAP_NO_BLOCK, PAGE_ENTRY_HEADER, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, frameLimit, asHello, type PageEntry, type Hello,
} from '../../src/wire/index.ts';
import { decodePayload, encodePayload } from '../../src/wire/codec.ts';

const isProtocolError = (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_PROTOCOL';

test('a page batch decodes to what was added, in order', () => {
  const b = new PageBatch(4);
  const data = Buffer.alloc(4096, 7);
  b.addFull(3, 10, data);
  b.addZero(4, 11);
  b.addRef(5, 12, 123456789012, 1, Buffer.alloc(16, 9));
  b.addRef(6, 13, 5000, 64, Buffer.alloc(16, 8));
  assert.equal(b.count, 4);
  assert.deepEqual(b.counts, { full: 1, zero: 1, ref: 65, lz4: 0, xbzrle: 0 }, 'a run counts its pages');
  const out: PageEntry[] = [];
  const payload = b.take();
  b.addZero(1, 1); // the next batch must not overwrite the payload handed out
  decodePages(payload, 100, (e) => out.push(e));
  assert.deepEqual(out.map((e) => [e.page, e.seq, e.encoding]), [[3, 10, ENCODING.FULL], [4, 11, ENCODING.ZERO], [5, 12, ENCODING.REF], [6, 13, ENCODING.REF_RUN]]);
  assert.ok(Buffer.from((out[0] as { data: Uint8Array }).data).equals(data));
  assert.deepEqual([(out[2] as { block: number }).block, (out[2] as { count: number }).count], [123456789012, 1]);
  const run = out[3] as { block: number; count: number; hash: Uint8Array };
  assert.deepEqual([run.block, run.count, Buffer.from(run.hash).equals(Buffer.alloc(16, 8))], [5000, 64, true]);
});

test('a reference run longer than the limit, empty, or past the end of memory is a protocol error', () => {
  for (const [page, count] of [[0, 65], [0, 0], [90, 11]]) {
    const b = new PageBatch(1);
    b.addRef(page, 1, 0, Math.max(2, count), Buffer.alloc(16));
    const p = b.take();
    p.writeUInt32BE(count, 4 + PAGE_ENTRY_HEADER + 8); // the count field as a peer might send it
    assert.throws(() => decodePages(p, 100, () => {}), (e: unknown) => isProtocolError(e) && /reference run/.test((e as Error).message));
  }
});

test('an unknown encoding is skipped by its length, and later entries still decode', () => {
  const b = new PageBatch(4);
  b.addZero(1, 1);
  const payload = b.take();
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
  assert.throws(() => decodePages(p.subarray(0, 100), 10, () => {}), isProtocolError);
  assert.throws(() => decodePages(p, 1, () => {}), /outside guest memory/);
  const bad = Buffer.from(p);
  bad.writeUInt16BE(100, 4 + 10); // a full page that claims 100 bytes
  assert.throws(() => decodePages(bad, 10, () => {}), isProtocolError);
  const zeroSeq = Buffer.from(p);
  zeroSeq.writeUInt32BE(0, 4 + 4);
  assert.throws(() => decodePages(zeroSeq, 10, () => {}), /sequence number 0/);
  assert.throws(() => decodePages(Buffer.alloc(2), 10, () => {}), isProtocolError);
});

test('page requests and map corrections round-trip and are bounds-checked', () => {
  assert.deepEqual(decodePageRequest(encodePageRequest([1, 5, 9]), 10), [1, 5, 9]);
  assert.throws(() => decodePageRequest(encodePageRequest([10]), 10), /outside guest memory/);
  assert.throws(() => decodePageRequest(Buffer.from([0, 0, 0, 3, 1]), 10), /malformed/);
  assert.deepEqual(decodeMap(encodeMap([[1, 7], [2, null], [3, 0]]), 10), { pages: Uint32Array.from([1, 2, 3]), blocks: Uint32Array.from([7, MAP_NO_BLOCK, 0]) });
  assert.throws(() => decodeMap(encodeMap([[10, 1]]), 10), /outside guest memory/);
  assert.throws(() => decodeMap(Buffer.from([0, 0, 0, 1, 0]), 10), /malformed/);
});

test('version negotiation takes the highest common version or refuses with both windows', () => {
  assert.equal(chooseVersion({ versionMin: PROTOCOL_VERSION_MIN, versionMax: PROTOCOL_VERSION + 3 }), PROTOCOL_VERSION);
  assert.equal(chooseVersion({ versionMin: 1, versionMax: PROTOCOL_VERSION }), PROTOCOL_VERSION);
  assert.throws(() => chooseVersion({ versionMin: 1, versionMax: 2 }), (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_VERSION' && /1\.\.2/.test(e.message) && e.message.includes(`${PROTOCOL_VERSION_MIN}..${PROTOCOL_VERSION}`));
  assert.throws(() => chooseVersion({ versionMin: PROTOCOL_VERSION + 1, versionMax: 9 }), (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_VERSION');
});

test('page hashes are keyed: another key gives another hash', () => {
  const page = Buffer.alloc(4096, 1);
  assert.equal(pageHash(Buffer.alloc(32, 1), page).length, 16);
  assert.notDeepEqual(pageHash(Buffer.alloc(32, 1), page), pageHash(Buffer.alloc(32, 2), page));
});

const validHello = (): Hello => ({
  protocol: 'livemig', versionMin: 3, versionMax: 3, capabilities: ['pages.full', 'pages.zero', 'return-path'],
  guest: { name: 'g', workload: 'idle', options: { seed: 1 }, memoryBytes: (1 << 30) + 4096, pageSize: 4096, regions: [{ firstPage: 0, pages: 1 << 18 }, { firstPage: 1 << 18, pages: 1 }] },
  storage: { spec: 'nbd://x/y', description: 'd', size: 1 << 20, sample: [{ block: 3, hash: 'ab'.repeat(16) }] },
  key: '00'.repeat(32), strategy: 'p2b',
});

test('JSON messages round-trip through the codec, and HELLO is validated field by field', () => {
  const hello = validHello();
  assert.deepEqual(decodePayload(FRAMES.HELLO.type, encodePayload({ name: 'HELLO', body: hello })), { name: 'HELLO', body: hello });
  const progress = { refsReceived: 1, pending: 2, applied: 3, bytesRead: 4, readRate: 5.5, verifyMs: 0.25 };
  assert.deepEqual(decodePayload(FRAMES.PROGRESS.type, encodePayload({ name: 'PROGRESS', body: progress })).body, progress);
  const broken: [string, (h: Hello) => unknown][] = [
    ['memory not a multiple of the page', (h) => ({ ...h, guest: { ...h.guest, memoryBytes: 4097 } })],
    ['regions that do not tile memory', (h) => ({ ...h, guest: { ...h.guest, regions: [{ firstPage: 0, pages: 1 << 18 }] } })],
    ['a region over 2^18 pages', (h) => ({ ...h, guest: { ...h.guest, memoryBytes: (1 << 30) + 4096, regions: [{ firstPage: 0, pages: (1 << 18) + 1 }] } })],
    ['a short key', (h) => ({ ...h, key: 'ab' })],
    ['a memory size over the limit', (h) => ({ ...h, guest: { ...h.guest, memoryBytes: 2 ** 45 } })],
    ['a sample hash that is not hex', (h) => ({ ...h, storage: { ...h.storage, sample: [{ block: 1, hash: 'zz'.repeat(16) }] } })],
    ['another protocol', (h) => ({ ...h, protocol: 'qemu' })],
    ['capabilities that are not strings', (h) => ({ ...h, capabilities: [1] })],
  ];
  for (const [what, f] of broken) assert.throws(() => asHello(f(validHello())), isProtocolError, what);
  assert.throws(() => decodePayload(FRAMES.HELLO.type, Buffer.from('{not json')), /not valid JSON/);
});

test('WELCOME carries the sampled blocks that differ, bounded and hex-checked', () => {
  const welcome = { version: PROTOCOL_VERSION, capabilities: ['return-path'], storageMatch: false, storageReason: 'r', storageDiffers: [{ block: 7, hash: 'cd'.repeat(16) }] };
  assert.deepEqual(decodePayload(FRAMES.WELCOME.type, encodePayload({ name: 'WELCOME', body: welcome })).body, welcome);
  const tooMany = { ...welcome, storageDiffers: Array.from({ length: 17 }, (_, i) => ({ block: i, hash: 'cd'.repeat(16) })) };
  assert.throws(() => decodePayload(FRAMES.WELCOME.type, encodePayload({ name: 'WELCOME', body: tooMany })), isProtocolError);
  const notHex = { ...welcome, storageDiffers: [{ block: 7, hash: 'zz'.repeat(16) }] };
  assert.throws(() => decodePayload(FRAMES.WELCOME.type, encodePayload({ name: 'WELCOME', body: notHex })), isProtocolError);
});

test('frames that grow with the guest are bounded by its size, and by a fixed bound before HELLO', () => {
  assert.equal(frameLimit(FRAMES.HELLO, 1 << 30), FRAMES.HELLO.maxBytes);
  assert.equal(frameLimit(FRAMES.MAP, 0), FRAMES.MAP.maxBytes);
  assert.equal(frameLimit(FRAMES.MAP, 1 << 30), FRAMES.MAP.maxBytes + 8 * (1 << 18));
});

async function channelFed(bytes: Buffer): Promise<{ c: Channel; done: () => void }> {
  const server = net.createServer((s) => s.end(bytes));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const c = await Channel.connect('127.0.0.1', (server.address() as net.AddressInfo).port);
  return { c, done: () => (c.destroy(), server.close()) };
}

test('frames with type 0, an unknown type, an oversized length or a type not allowed now end the channel with a protocol error', async () => {
  const header = (type: number, length: number) => {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(type, 0);
    h.writeUInt32BE(length, 4);
    return h;
  };
  for (const [bytes, only] of [[header(0, 0), null], [header(200, 0), null], [header(FRAMES.PAGES.type, FRAMES.PAGES.maxBytes + 1), null], [header(FRAMES.PAGES.type, 10), ['HELLO']]] as const) {
    const { c, done } = await channelFed(bytes);
    c.only(only as never);
    await assert.rejects(c.read(), isProtocolError);
    done();
  }
});

test('a peer ERROR read where another frame was expected becomes the peer\'s error, with its code if it is one of ours', async () => {
  const body = Buffer.from(JSON.stringify({ code: 'MIGRATE_LAYOUT', message: 'too big' }));
  const h = Buffer.alloc(8);
  h.writeUInt16BE(FRAMES.ERROR.type, 0);
  h.writeUInt32BE(body.length, 4);
  const { c, done } = await channelFed(Buffer.concat([h, body]));
  await assert.rejects(c.expect('WELCOME', 5000, 'destination'), (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_LAYOUT' && /destination: too big/.test(e.message));
  done();
  const odd = Buffer.from(JSON.stringify({ code: 'SOMETHING_ELSE', message: 'x' }));
  h.writeUInt32BE(odd.length, 4);
  const second = await channelFed(Buffer.concat([h, odd]));
  await assert.rejects(second.c.expect('WELCOME', 5000), (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_FAILED');
  second.done();
});
