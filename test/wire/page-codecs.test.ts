/**
 * The page codecs, LZ4 and XBZRLE: what is encoded decodes to the page, for
 * random, structured and adversarial pages; and a hostile body (a delta that
 * runs past the page, a stated size that is not a page) is MIGRATE_PROTOCOL.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LivemigError } from '../../src/errors.ts';
import { Rng } from '../../src/util/rng.ts';
import { ENCODING, PAGE_SIZE, PageBatch, XBZRLE_LIMIT, decodePages, lz4Compress, lz4Decompress, xbzrleDecode, xbzrleEncode, type PageEntry } from '../../src/wire/index.ts';
import { heapFill, heapWrite } from '../../src/guest/workloads/heap.ts';

const isProtocolError = (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_PROTOCOL';
const page = (fill: (b: Buffer) => void) => {
  const b = Buffer.alloc(PAGE_SIZE);
  fill(b);
  return b;
};

/** Encodes now against old and applies the delta to a copy of old: it must give now. */
function roundTrip(old: Buffer, now: Buffer, limit = PAGE_SIZE): number {
  const out = Buffer.alloc(Math.max(limit, PAGE_SIZE));
  const n = xbzrleEncode(old, now, out, limit);
  if (n < 0) return n;
  const copy = Buffer.from(old);
  xbzrleDecode(out.subarray(0, n), copy);
  assert.ok(copy.equals(now), 'the delta applied to the old page gives the new page');
  return n;
}

test('XBZRLE: a delta applied to the old page gives the new one, whatever changed', () => {
  const rng = new Rng(5);
  const random = () => page((b) => rng.fill(b));
  const base = random();
  assert.equal(roundTrip(base, Buffer.from(base)), 0, 'an unchanged page is an empty delta');
  for (let i = 0; i < 500; i++) {
    const now = Buffer.from(base);
    // Changes of every shape: single bytes, runs across word edges, the first and last byte.
    for (let k = rng.int(12); k >= 0; k--) {
      const at = rng.int(PAGE_SIZE);
      const len = 1 + rng.int(Math.min(300, PAGE_SIZE - at));
      for (let j = at; j < at + len; j++) now[j] = rng.int(4) === 0 ? base[j] : base[j] ^ (1 + rng.int(255));
    }
    if (i % 7 === 0) now[0] ^= 1;
    if (i % 11 === 0) now[PAGE_SIZE - 1] ^= 0x80;
    roundTrip(base, now);
  }
  // Alternating bytes: the most runs a page can have; it does not fit a page's worth of delta.
  const alternating = page((b) => { for (let j = 0; j < PAGE_SIZE; j += 2) b[j] = 1; });
  assert.equal(roundTrip(Buffer.alloc(PAGE_SIZE), alternating, PAGE_SIZE), -1);
  assert.ok(roundTrip(Buffer.alloc(PAGE_SIZE), alternating, 4 * PAGE_SIZE) > PAGE_SIZE);
  // Unaligned views take the byte path.
  const a = Buffer.alloc(PAGE_SIZE + 1).subarray(1);
  const b = Buffer.from(a);
  b[17] = 9;
  assert.equal(roundTrip(Buffer.from(a), b), 3);
});

test('XBZRLE: a rewrite of random bytes gives up at the limit; a partial write of heap content is a small delta', () => {
  const rng = new Rng(9);
  const old = page((b) => rng.fill(b));
  const now = page((b) => rng.fill(b));
  assert.equal(xbzrleEncode(old, now, Buffer.alloc(PAGE_SIZE), XBZRLE_LIMIT), -1);
  const heap = page((b) => heapFill(rng, 'compressible')(b));
  const written = Buffer.from(heap);
  heapWrite(rng, 'compressible', 256)(written);
  const n = roundTrip(heap, written, XBZRLE_LIMIT);
  assert.ok(n >= 0 && n <= 256 + 16, `a 256-byte write makes a ${n}-byte delta`);
});

test('XBZRLE: hostile deltas are protocol errors, never writes past the page', () => {
  const target = Buffer.alloc(PAGE_SIZE);
  const bad: [string, number[]][] = [
    ['a changed run past the page', [0x80, 0x20, 0x01, 0xaa]], // skip 4096, then 1 byte
    ['a long run past the page', [0x00, 0xff, 0x7f, ...Array(16).fill(1)]], // 16383 bytes
    ['a run longer than the body', [0x00, 0x10, 1, 2, 3]],
    ['an empty changed run', [0x00, 0x00]],
    ['an empty unchanged run after the first', [0x00, 0x01, 0xaa, 0x00, 0x01, 0xbb]],
    ['a three-byte length', [0x80, 0x80, 0x01, 0x01, 0xaa]],
    ['a body that ends inside a length', [0x05]],
    ['a body that ends inside a two-byte length', [0x00, 0x81]],
  ];
  for (const [what, bytes] of bad) assert.throws(() => xbzrleDecode(Uint8Array.from(bytes), target), isProtocolError, what);
  // Random garbage: either a valid delta or a protocol error, and the page never grows.
  const rng = new Rng(3);
  for (let i = 0; i < 2000; i++) {
    const delta = new Uint8Array(1 + rng.int(64));
    rng.fill(delta);
    try {
      xbzrleDecode(delta, target);
    } catch (e) {
      assert.ok(isProtocolError(e), String(e));
    }
    assert.equal(target.length, PAGE_SIZE);
  }
});

test('LZ4: compressible pages round-trip smaller; incompressible ones are not sent compressed', () => {
  const rng = new Rng(1);
  for (let i = 0; i < 50; i++) {
    const p = page((b) => heapFill(rng, 'compressible')(b));
    const body = lz4Compress(p);
    assert.ok(body && body.length < PAGE_SIZE / 2, `heap page compressed to ${body?.length}`);
    assert.ok(lz4Decompress(body).equals(p));
  }
  assert.equal(lz4Compress(page((b) => rng.fill(b)), PAGE_SIZE - 64), null, 'random bytes do not compress');
  const zeros = lz4Compress(Buffer.alloc(PAGE_SIZE))!;
  assert.ok(lz4Decompress(zeros).equals(Buffer.alloc(PAGE_SIZE)));
});

test('LZ4: a body that states another size, or decodes to anything but one page, is a protocol error', () => {
  const good = lz4Compress(Buffer.alloc(PAGE_SIZE, 7))!;
  const huge = Buffer.from(good);
  huge.writeUInt32LE(0x7fffffff, 0); // must never become an allocation
  assert.throws(() => lz4Decompress(huge), isProtocolError);
  assert.throws(() => lz4Decompress(good.subarray(0, 4)), isProtocolError);
  assert.throws(() => lz4Decompress(good.subarray(0, good.length - 2)), isProtocolError);
  const short = lz4Compress(Buffer.alloc(PAGE_SIZE / 2, 7) as Buffer, PAGE_SIZE)!;
  const lying = Buffer.from(short);
  lying.writeUInt32LE(PAGE_SIZE, 0); // states a page, holds half of one
  assert.throws(() => lz4Decompress(lying), isProtocolError);
  const rng = new Rng(4);
  for (let i = 0; i < 2000; i++) {
    const body = Buffer.alloc(5 + rng.int(200));
    rng.fill(body);
    body.writeUInt32LE(PAGE_SIZE, 0);
    try {
      assert.equal(lz4Decompress(body).length, PAGE_SIZE);
    } catch (e) {
      assert.ok(isProtocolError(e), String(e));
    }
  }
});

test('LZ4 and XBZRLE entries travel in a page batch and come out as views of their bodies', () => {
  const b = new PageBatch(4);
  const lz = lz4Compress(Buffer.alloc(PAGE_SIZE, 3))!;
  b.addLz4(2, 10, lz);
  b.addXbzrle(3, 12, 7, Uint8Array.of(0x05, 0x01, 0xee));
  assert.deepEqual(b.counts, { full: 2, zero: 0, ref: 0, lz4: 1, xbzrle: 1 });
  const out: PageEntry[] = [];
  decodePages(b.take(), 10, (e) => out.push(e));
  assert.deepEqual(out.map((e) => [e.page, e.seq, e.encoding]), [[2, 10, ENCODING.LZ4], [3, 12, ENCODING.XBZRLE]]);
  assert.ok(Buffer.from((out[0] as { compressed: Uint8Array }).compressed).equals(lz));
  assert.equal((out[1] as { baseSeq: number }).baseSeq, 7);
  assert.deepEqual([...(out[1] as { delta: Uint8Array }).delta], [0x05, 0x01, 0xee]);
});

test('an XBZRLE entry against a version not older than itself, or a body out of bounds, is a protocol error', () => {
  const entry = (encoding: number, seq: number, body: Buffer) => {
    const p = Buffer.alloc(4 + 12 + body.length);
    p.writeUInt32BE(1, 0);
    p.writeUInt32BE(0, 4);
    p.writeUInt32BE(seq, 8);
    p.writeUInt8(encoding, 12);
    p.writeUInt16BE(body.length, 14);
    body.copy(p, 16);
    return p;
  };
  const base = (n: number) => Buffer.from([0, 0, 0, n, 0x01, 0x01, 0xff]);
  assert.throws(() => decodePages(entry(ENCODING.XBZRLE, 5, base(5)), 1, () => {}), isProtocolError);
  assert.throws(() => decodePages(entry(ENCODING.XBZRLE, 5, base(0)), 1, () => {}), isProtocolError);
  assert.throws(() => decodePages(entry(ENCODING.XBZRLE, 5, Buffer.alloc(3)), 1, () => {}), isProtocolError);
  assert.throws(() => decodePages(entry(ENCODING.LZ4, 5, Buffer.alloc(4)), 1, () => {}), isProtocolError);
  assert.throws(() => decodePages(entry(ENCODING.LZ4, 5, Buffer.alloc(PAGE_SIZE + 5)), 1, () => {}), isProtocolError);
  decodePages(entry(ENCODING.XBZRLE, 5, base(4)), 1, (e) => assert.equal((e as { baseSeq: number }).baseSeq, 4));
});
