/**
 * The binary payloads: PAGES batches, PAGE_REQUEST and MAP (layouts in
 * protocol.ts and docs/protocol.md). Batches are built as parts that point at the
 * pages they carry and decoded into views of the payload: no per-page copies on the hot path.
 */
import { LivemigError } from '../errors.ts';
import { ENCODING, ENCODING_BODY, ENCODING_BODY_RANGE, HASH_BYTES, MAP_NO_BLOCK, MAX_REF_RUN, PAGE_ENTRY_HEADER, PAGE_SIZE, PAGES_PER_FRAME } from './protocol.ts';

export type PageEntry =
  | { page: number; seq: number; encoding: typeof ENCODING.FULL; data: Uint8Array }
  | { page: number; seq: number; encoding: typeof ENCODING.ZERO }
  | { page: number; seq: number; encoding: typeof ENCODING.REF; block: number; count: 1; hash: Uint8Array }
  | { page: number; seq: number; encoding: typeof ENCODING.REF_RUN; block: number; count: number; hash: Uint8Array }
  | { page: number; seq: number; encoding: typeof ENCODING.LZ4; compressed: Uint8Array }
  | { page: number; seq: number; encoding: typeof ENCODING.XBZRLE; baseSeq: number; delta: Uint8Array }
  | { page: number; seq: number; encoding: number; unknown: true };

const protocolError = (what: string) => new LivemigError('MIGRATE_PROTOCOL', what);

/**
 * Builds one PAGES payload: count u32, then entries. Full pages are not copied:
 * the payload is a list of parts (headers and small bodies in one buffer, full
 * pages, LZ4 bodies and XBZRLE deltas as views of the memory given), sent with one writev. A page whose bytes
 * change before the socket takes them goes out newer than its sequence number
 * says; its dirty bit (set after the write lands) sends it again later, so the
 * destination still ends with the page as of pause.
 */
export class PageBatch {
  private meta: Buffer;
  private at = 4;
  /** Where the meta bytes not yet in `parts` start. */
  private cut = 0;
  private parts: Uint8Array[] = [];
  private bytes = 0;
  count = 0;
  /** Pages by encoding since the batch was made (a run counts its pages; lz4 and xbzrle pages count as full too). */
  readonly counts = { full: 0, zero: 0, ref: 0, lz4: 0, xbzrle: 0 };

  constructor(readonly capacity = PAGES_PER_FRAME) {
    this.meta = Buffer.allocUnsafe(4 + capacity * (PAGE_ENTRY_HEADER + ENCODING_BODY[ENCODING.REF_RUN]));
  }

  get full(): boolean {
    return this.count >= this.capacity;
  }

  /** Payload bytes so far. */
  get length(): number {
    return this.bytes + this.at - this.cut;
  }

  private header(page: number, seq: number, encoding: number, length: number): void {
    const b = this.meta;
    b.writeUInt32BE(page, this.at);
    b.writeUInt32BE(seq, this.at + 4);
    b.writeUInt8(encoding, this.at + 8);
    b.writeUInt8(0, this.at + 9);
    b.writeUInt16BE(length, this.at + 10);
    this.at += PAGE_ENTRY_HEADER;
    this.count++;
  }

  /** The meta bytes so far become a part, then `body` one of its own: a view, valid until the payload is written. */
  private pushView(body: Uint8Array): void {
    this.parts.push(this.meta.subarray(this.cut, this.at), body);
    this.bytes += this.at - this.cut + body.length;
    this.cut = this.at;
  }

  /** The page's bytes go out as a view of `data`: it must stay valid until the payload is written. */
  addFull(page: number, seq: number, data: Uint8Array): void {
    this.header(page, seq, ENCODING.FULL, PAGE_SIZE);
    this.pushView(data.subarray(0, PAGE_SIZE));
    this.counts.full++;
  }

  /** A page as an LZ4 body (lz4-page.ts), sent as a view of `body` as a full page is. */
  addLz4(page: number, seq: number, body: Uint8Array): void {
    this.header(page, seq, ENCODING.LZ4, body.length);
    this.pushView(body);
    this.counts.full++;
    this.counts.lz4++;
  }

  /** A page as an XBZRLE delta (xbzrle.ts) against its version `baseSeq`, sent as a view of `delta`. */
  addXbzrle(page: number, seq: number, baseSeq: number, delta: Uint8Array): void {
    this.header(page, seq, ENCODING.XBZRLE, 4 + delta.length);
    this.meta.writeUInt32BE(baseSeq, this.at);
    this.at += 4;
    this.pushView(delta);
    this.counts.full++;
    this.counts.xbzrle++;
  }

  addZero(page: number, seq: number): void {
    this.header(page, seq, ENCODING.ZERO, 0);
    this.counts.zero++;
  }

  /** Pages page.. are blocks block.., `count` of them (1: a REF), sequence numbers seq..; one keyed hash for all. */
  addRef(page: number, seq: number, block: number, count: number, hash: Uint8Array): void {
    const run = count > 1;
    this.header(page, seq, run ? ENCODING.REF_RUN : ENCODING.REF, ENCODING_BODY[run ? ENCODING.REF_RUN : ENCODING.REF]);
    this.meta.writeBigUInt64BE(BigInt(block), this.at);
    if (run) this.meta.writeUInt32BE(count, this.at + 8);
    this.meta.set(hash.subarray(0, HASH_BYTES), this.at + (run ? 12 : 8));
    this.at += ENCODING_BODY[run ? ENCODING.REF_RUN : ENCODING.REF];
    this.counts.ref += count;
  }

  /** The payload as parts to write in order; the batch starts over empty. */
  takeParts(): Uint8Array[] {
    this.meta.writeUInt32BE(this.count, 0);
    const out = this.parts;
    if (this.at > this.cut) out.push(this.meta.subarray(this.cut, this.at));
    // The parts still point into meta: the next batch gets a buffer of its own.
    this.meta = Buffer.allocUnsafe(this.meta.length);
    this.parts = [];
    this.at = 4;
    this.cut = this.bytes = this.count = 0;
    return out;
  }

  /** The payload in one buffer (a copy; for tests and small frames). */
  take(): Buffer {
    return Buffer.concat(this.takeParts());
  }
}

/** Calls fn for each entry of a PAGES payload; bodies are views into the payload. */
export function decodePages(payload: Buffer, pages: number, fn: (e: PageEntry) => void): void {
  if (payload.length < 4) throw protocolError('PAGES frame too short');
  const count = payload.readUInt32BE(0);
  let at = 4;
  for (let i = 0; i < count; i++) {
    if (at + PAGE_ENTRY_HEADER > payload.length) throw protocolError('PAGES entry overruns its frame');
    const page = payload.readUInt32BE(at);
    const seq = payload.readUInt32BE(at + 4);
    const encoding = payload.readUInt8(at + 8);
    const length = payload.readUInt16BE(at + 10);
    at += PAGE_ENTRY_HEADER;
    if (at + length > payload.length) throw protocolError('PAGES entry body overruns its frame');
    if (page >= pages) throw protocolError(`page ${page} is outside guest memory (${pages} pages)`);
    if (seq === 0) throw protocolError('sequence number 0 is never sent');
    fn(decodeEntry(page, seq, encoding, payload.subarray(at, at + length), pages));
    at += length;
  }
}

function decodeEntry(page: number, seq: number, encoding: number, body: Buffer, pages: number): PageEntry {
  if (encoding === ENCODING.LZ4 || encoding === ENCODING.XBZRLE) {
    const [min, max] = ENCODING_BODY_RANGE[encoding];
    if (body.length < min || body.length > max) throw protocolError(`page entry of encoding ${encoding} with a ${body.length}-byte body`);
    if (encoding === ENCODING.LZ4) return { page, seq, encoding, compressed: body };
    const baseSeq = body.readUInt32BE(0);
    if (baseSeq === 0 || baseSeq >= seq) throw protocolError(`XBZRLE entry of seq ${seq} against version ${baseSeq}`);
    return { page, seq, encoding, baseSeq, delta: body.subarray(4) };
  }
  const expected = ENCODING_BODY[encoding as keyof typeof ENCODING_BODY];
  if (expected === undefined) return { page, seq, encoding, unknown: true };
  if (body.length !== expected) throw protocolError(`page entry of encoding ${encoding} with a ${body.length}-byte body`);
  if (encoding === ENCODING.FULL) return { page, seq, encoding, data: body };
  if (encoding === ENCODING.ZERO) return { page, seq, encoding };
  const block = Number(body.readBigUInt64BE(0));
  if (encoding === ENCODING.REF) return { page, seq, encoding, block, count: 1, hash: body.subarray(8, 8 + HASH_BYTES) };
  const count = body.readUInt32BE(8);
  if (count < 1 || count > MAX_REF_RUN || page + count > pages) throw protocolError(`reference run of ${count} pages from page ${page}`);
  return { page, seq, encoding: ENCODING.REF_RUN, block, count, hash: body.subarray(12, 12 + HASH_BYTES) };
}

/** PAGE_REQUEST payload: count u32, then page u32 each. */
export function encodePageRequest(list: readonly number[]): Buffer {
  const b = Buffer.allocUnsafe(4 + list.length * 4);
  b.writeUInt32BE(list.length, 0);
  list.forEach((p, i) => b.writeUInt32BE(p, 4 + i * 4));
  return b;
}

export function decodePageRequest(payload: Buffer, pages: number): number[] {
  const count = payload.length >= 4 ? payload.readUInt32BE(0) : -1;
  if (count < 0 || payload.length !== 4 + count * 4) throw protocolError('malformed PAGE_REQUEST');
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const p = payload.readUInt32BE(4 + i * 4);
    if (p >= pages) throw protocolError(`requested page ${p} is outside guest memory`);
    out.push(p);
  }
  return out;
}

/** One MAP correction: the page's block at pause, or null for no mapping. */
export type MapCorrection = [page: number, block: number | null];

/** MAP corrections as two arrays (block MAP_NO_BLOCK: no mapping): no object per entry, at 8 GiB there may be millions. */
export interface MapCorrections {
  pages: Uint32Array;
  blocks: Uint32Array;
}

/** MAP payload: count u32, then page u32 | block u32 (MAP_NO_BLOCK: no mapping). */
export function encodeMap(entries: readonly MapCorrection[] | MapCorrections): Buffer {
  const c = Array.isArray(entries)
    ? { pages: Uint32Array.from(entries, (e) => e[0]), blocks: Uint32Array.from(entries, (e) => e[1] ?? MAP_NO_BLOCK) }
    : (entries as MapCorrections);
  const n = c.pages.length;
  const b = Buffer.allocUnsafe(4 + n * 8);
  b.writeUInt32BE(n, 0);
  for (let i = 0; i < n; i++) {
    b.writeUInt32BE(c.pages[i], 4 + i * 8);
    b.writeUInt32BE(c.blocks[i], 8 + i * 8);
  }
  return b;
}

/** The corrections of a MAP payload, every page checked against the guest's size. */
export function decodeMap(payload: Buffer, pages: number): MapCorrections {
  const count = payload.length >= 4 ? payload.readUInt32BE(0) : -1;
  if (count < 0 || payload.length !== 4 + count * 8) throw protocolError('malformed MAP frame');
  const out = { pages: new Uint32Array(count), blocks: new Uint32Array(count) };
  for (let i = 0; i < count; i++) {
    const p = payload.readUInt32BE(4 + i * 8);
    if (p >= pages) throw protocolError(`MAP names page ${p}, outside guest memory`);
    out.pages[i] = p;
    out.blocks[i] = payload.readUInt32BE(8 + i * 8);
  }
  return out;
}
