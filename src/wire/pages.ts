/** Encoding and decoding of PAGES batches (see frames.ts for the entry layout). */
import { PAGE_SIZE } from '../guest/layout.ts';
import { ENCODING, PAGE_ENTRY_HEADER, REF_BODY, REF_RUN_BODY, MAX_REF_RUN, HASH_BYTES, WireError } from './frames.ts';

export type PageEntry =
  | { page: number; seq: number; encoding: typeof ENCODING.FULL; data: Uint8Array }
  | { page: number; seq: number; encoding: typeof ENCODING.ZERO }
  | { page: number; seq: number; encoding: typeof ENCODING.REF; block: number; hash: Uint8Array }
  | { page: number; seq: number; encoding: typeof ENCODING.REF_RUN; block: number; count: number; hash: Uint8Array }
  | { page: number; seq: number; encoding: number; unknown: true };

/** Builds one PAGES payload; entries are appended into one buffer, no per-page objects. */
export class PageBatch {
  private buf: Buffer;
  private at = 4;
  count = 0;
  counts = { full: 0, zero: 0, ref: 0 };

  constructor(readonly capacity = 256) {
    this.buf = Buffer.allocUnsafe(4 + capacity * (PAGE_ENTRY_HEADER + PAGE_SIZE));
  }

  get full(): boolean {
    return this.count >= this.capacity;
  }

  private header(page: number, seq: number, encoding: number, length: number): void {
    const b = this.buf;
    b.writeUInt32BE(page, this.at);
    b.writeUInt32BE(seq, this.at + 4);
    b.writeUInt8(encoding, this.at + 8);
    b.writeUInt8(0, this.at + 9);
    b.writeUInt16BE(length, this.at + 10);
    this.at += PAGE_ENTRY_HEADER;
    this.count++;
  }

  addFull(page: number, seq: number, data: Uint8Array): void {
    this.header(page, seq, ENCODING.FULL, PAGE_SIZE);
    this.buf.set(data, this.at);
    this.at += PAGE_SIZE;
    this.counts.full++;
  }

  addZero(page: number, seq: number): void {
    this.header(page, seq, ENCODING.ZERO, 0);
    this.counts.zero++;
  }

  addRef(page: number, seq: number, block: number, hash: Uint8Array): void {
    this.header(page, seq, ENCODING.REF, REF_BODY);
    this.buf.writeBigUInt64BE(BigInt(block), this.at);
    this.buf.set(hash.subarray(0, HASH_BYTES), this.at + 8);
    this.at += REF_BODY;
    this.counts.ref++;
  }

  /** Pages page.. as blocks block.., `count` of them, sequence numbers seq..; one hash for all. */
  addRefRun(page: number, seq: number, block: number, count: number, hash: Uint8Array): void {
    this.header(page, seq, ENCODING.REF_RUN, REF_RUN_BODY);
    this.buf.writeBigUInt64BE(BigInt(block), this.at);
    this.buf.writeUInt32BE(count, this.at + 8);
    this.buf.set(hash.subarray(0, HASH_BYTES), this.at + 12);
    this.at += REF_RUN_BODY;
    this.counts.ref += count;
  }

  /** The payload to send; the batch starts over empty. */
  take(): Buffer {
    this.buf.writeUInt32BE(this.count, 0);
    // Hand the filled buffer over and start a new one: copying 1 MiB per frame was a tenth
    // of the source's time in an unthrottled baseline migration.
    const out = this.buf.subarray(0, this.at);
    this.buf = Buffer.allocUnsafe(this.buf.length);
    this.at = 4;
    this.count = 0;
    return out;
  }
}

/** Calls fn for each entry of a PAGES payload; bodies are views into the payload. */
export function decodePages(payload: Buffer, pages: number, fn: (e: PageEntry) => void): void {
  if (payload.length < 4) throw new WireError('MIGRATE_PROTOCOL', 'PAGES frame too short');
  const count = payload.readUInt32BE(0);
  let at = 4;
  for (let i = 0; i < count; i++) {
    if (at + PAGE_ENTRY_HEADER > payload.length) throw new WireError('MIGRATE_PROTOCOL', 'PAGES entry overruns its frame');
    const page = payload.readUInt32BE(at);
    const seq = payload.readUInt32BE(at + 4);
    const encoding = payload.readUInt8(at + 8);
    const length = payload.readUInt16BE(at + 10);
    at += PAGE_ENTRY_HEADER;
    if (at + length > payload.length) throw new WireError('MIGRATE_PROTOCOL', 'PAGES entry body overruns its frame');
    if (page >= pages) throw new WireError('MIGRATE_PROTOCOL', `page ${page} is outside guest memory (${pages} pages)`);
    const body = payload.subarray(at, at + length);
    at += length;
    if (encoding === ENCODING.FULL) {
      if (length !== PAGE_SIZE) throw new WireError('MIGRATE_PROTOCOL', `full page of ${length} bytes`);
      fn({ page, seq, encoding, data: body });
    } else if (encoding === ENCODING.ZERO) fn({ page, seq, encoding });
    else if (encoding === ENCODING.REF) {
      if (length !== REF_BODY) throw new WireError('MIGRATE_PROTOCOL', `reference of ${length} bytes`);
      fn({ page, seq, encoding, block: Number(body.readBigUInt64BE(0)), hash: body.subarray(8, 8 + HASH_BYTES) });
    } else if (encoding === ENCODING.REF_RUN) {
      if (length !== REF_RUN_BODY) throw new WireError('MIGRATE_PROTOCOL', `reference run of ${length} bytes`);
      const count = body.readUInt32BE(8);
      if (count < 1 || count > MAX_REF_RUN || page + count > pages) throw new WireError('MIGRATE_PROTOCOL', `reference run of ${count} pages from page ${page}`);
      fn({ page, seq, encoding, block: Number(body.readBigUInt64BE(0)), count, hash: body.subarray(12, 12 + HASH_BYTES) });
    } else fn({ page, seq, encoding, unknown: true });
  }
}

/** PAGE_REQUEST payload: count u32, then pages u32. */
export function encodePageRequest(pages: number[]): Buffer {
  const b = Buffer.allocUnsafe(4 + pages.length * 4);
  b.writeUInt32BE(pages.length, 0);
  pages.forEach((p, i) => b.writeUInt32BE(p, 4 + i * 4));
  return b;
}

export function decodePageRequest(payload: Buffer, pages: number): number[] {
  const count = payload.length >= 4 ? payload.readUInt32BE(0) : -1;
  if (count < 0 || payload.length !== 4 + count * 4) throw new WireError('MIGRATE_PROTOCOL', 'malformed PAGE_REQUEST');
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const p = payload.readUInt32BE(4 + i * 4);
    if (p >= pages) throw new WireError('MIGRATE_PROTOCOL', `requested page ${p} is outside guest memory`);
    out.push(p);
  }
  return out;
}

/** MAP payload: count u32, then page u32 | block u32 pairs. */
export function encodeMapCorrections(entries: [number, number][]): Buffer {
  const b = Buffer.allocUnsafe(4 + entries.length * 8);
  b.writeUInt32BE(entries.length, 0);
  entries.forEach(([p, blk], i) => {
    b.writeUInt32BE(p, 4 + i * 8);
    b.writeUInt32BE(blk, 8 + i * 8);
  });
  return b;
}

export function decodeMapCorrections(payload: Buffer, pages: number): [number, number][] {
  const count = payload.length >= 4 ? payload.readUInt32BE(0) : -1;
  if (count < 0 || payload.length !== 4 + count * 8) throw new WireError('MIGRATE_PROTOCOL', 'malformed MAP frame');
  const out: [number, number][] = [];
  for (let i = 0; i < count; i++) {
    const p = payload.readUInt32BE(4 + i * 8);
    if (p >= pages) throw new WireError('MIGRATE_PROTOCOL', `MAP names page ${p}, outside guest memory`);
    out.push([p, payload.readUInt32BE(8 + i * 8)]);
  }
  return out;
}
