/**
 * The page codecs hand a PAGES batch views, not copies (the batch goes out with
 * one writev): every page, snapshot, LZ4 body and XBZRLE delta of a batch must
 * keep its own bytes until the batch is taken, however many pages follow.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PageCodecs } from '../../src/migrate/source/page-codecs.ts';
import { ENCODING, PAGE_SIZE, PageBatch, decodePages, lz4Decompress, xbzrleDecode } from '../../src/wire/index.ts';

const PAGES = 200;

/** A page LZ4 shrinks: runs of a few values, different for each page. */
function compressible(i: number): Buffer {
  const p = Buffer.alloc(PAGE_SIZE);
  for (let at = 0; at < PAGE_SIZE; at += 64) p.fill((i * 7 + at / 64) % 5, at, at + 64);
  p.writeUInt32BE(i, 0);
  return p;
}

/** What the destination holds after applying the batch to `held`: each page's bytes as the entries carry them. */
function apply(payload: Buffer, held: Map<number, Buffer>): Map<number, Buffer> {
  decodePages(payload, PAGES, (e) => {
    if (e.encoding === ENCODING.FULL && 'data' in e) held.set(e.page, Buffer.from(e.data));
    else if ('compressed' in e) held.set(e.page, lz4Decompress(e.compressed));
    else if ('delta' in e) {
      const page = Buffer.from(held.get(e.page)!);
      xbzrleDecode(e.delta, page);
      held.set(e.page, page);
    } else assert.fail(`unexpected encoding ${e.encoding}`);
  });
  return held;
}

test('pages through the codecs keep their own bytes in a batch: full from snapshots, LZ4 bodies and XBZRLE deltas all decode to what was added', () => {
  const codecs = new PageCodecs({ compress: 'always', xbzrleCacheBytes: PAGES * PAGE_SIZE }, true, true);
  const memory = Array.from({ length: PAGES }, (_, i) => (i % 2 ? randomBytes(PAGE_SIZE) : compressible(i)));
  const live = Buffer.allocUnsafe(PAGE_SIZE); // one buffer the "guest" rewrites: the batch must not point at it
  const round = (seq0: number) => {
    const batch = new PageBatch(PAGES);
    memory.forEach((bytes, i) => (live.set(bytes), codecs.add(batch, i, seq0 + i, live)));
    live.fill(0xee);
    return batch.take();
  };
  const held = new Map<number, Buffer>();
  let payload: Buffer = Buffer.alloc(0);
  // Round 0's pages are not cached, round 1's are, round 2 goes as deltas against them.
  for (let r = 0; r < 3; r++) {
    if (r) for (const bytes of memory) bytes[100 + r] ^= 0x5a; // a small write to every page
    payload = round(1 + r * PAGES);
    apply(payload, held);
    codecs.endRound();
  }
  let deltas = 0;
  decodePages(payload, PAGES, (e) => void (e.encoding === ENCODING.XBZRLE && deltas++));
  assert.ok(deltas > PAGES / 2, `most pages went as XBZRLE deltas (${deltas})`);
  memory.forEach((bytes, i) => assert.ok(held.get(i)!.equals(bytes), `page ${i} arrives as it was added`));
});
