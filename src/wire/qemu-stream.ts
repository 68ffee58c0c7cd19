/**
 * The binary payloads of QEMU streams (docs/protocol.md, "QEMU streams"): the
 * entries of QEMU_STREAM, QEMU_ACK, QEMU_REF_REQUEST and QEMU_REF_DATA. A source
 * builds each frame into one buffer; a destination decodes entries into views of
 * the payload. 64-bit fields carry numbers below 2^53, written as two u32 halves.
 */
import { LivemigError } from '../errors.ts';
import { HASH_BYTES, MAX_REF_RUN, PAGE_SIZE, QEMU_ENTRY, QEMU_ENTRY_BODY, QEMU_ENTRY_HEADER, QEMU_FRAME_TARGET, QEMU_REF_RANGE } from './protocol.ts';

export type QemuEntry =
  | { kind: typeof QEMU_ENTRY.BYTES; data: Buffer }
  /** Pages offset.. of QEMU's RAM are disk blocks block.., count of them; `hash` covers them all. */
  | { kind: typeof QEMU_ENTRY.REF_RUN; offset: number; block: number; count: number; hash: Buffer };

const protocolError = (what: string) => new LivemigError('MIGRATE_PROTOCOL', what);
const REF_BODY = QEMU_ENTRY_BODY[QEMU_ENTRY.REF_RUN];
const TWO_32 = 2 ** 32;

function writeU64(b: Buffer, v: number, at: number): void {
  b.writeUInt32BE(Math.floor(v / TWO_32), at);
  b.writeUInt32BE(v >>> 0, at + 4);
}

/** A u64 as a number; values of 2^53 and more are refused (no page, block or count gets there). */
function readU64(b: Buffer, at: number, what: string): number {
  const hi = b.readUInt32BE(at);
  if (hi >= 1 << 21) throw protocolError(`${what} is out of range`);
  return hi * TWO_32 + b.readUInt32BE(at + 4);
}

/** Builds one QEMU_STREAM payload: stream bytes gather into BYTES entries, references into REF_RUN entries. */
export class QemuStreamFrame {
  private buf: Buffer;
  private at = 0;
  /** Where the open BYTES entry's header is (-1: none open). */
  private open = -1;
  refPages = 0;
  /** Buffers taken and maybe still being sent, and buffers free for the next frames. */
  private taken: Buffer[] = [];
  private free: Buffer[] = [];

  constructor(readonly target = QEMU_FRAME_TARGET) {
    this.buf = this.fresh();
  }

  private fresh(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.target + QEMU_ENTRY_HEADER + REF_BODY);
  }

  /** The caller knows every payload taken so far has been written out: their buffers serve again. */
  recycle(): void {
    this.free.push(...this.taken.splice(0));
    this.free.length = Math.min(this.free.length, 4);
  }

  get length(): number {
    return this.at;
  }

  /** True once the frame reached its target size (no room for another entry header): take() it. */
  get full(): boolean {
    return this.at + QEMU_ENTRY_HEADER >= this.target;
  }

  /** Appends as much of `data` as fits; returns how many bytes it took. */
  bytes(data: Uint8Array): number {
    if (this.open < 0) {
      if (this.full) return 0;
      this.open = this.at;
      this.buf[this.at] = QEMU_ENTRY.BYTES;
      this.at += QEMU_ENTRY_HEADER;
    }
    const n = Math.min(data.length, this.target - this.at);
    this.buf.set(n === data.length ? data : data.subarray(0, n), this.at);
    this.at += n;
    return n;
  }

  /** Appends a reference run (always fits: the buffer keeps room for one past the target). */
  ref(offset: number, block: number, count: number, hash: Uint8Array): void {
    this.close();
    const b = this.buf;
    b[this.at] = QEMU_ENTRY.REF_RUN;
    b.writeUInt32BE(REF_BODY, this.at + 1);
    writeU64(b, offset, this.at + 5);
    writeU64(b, block, this.at + 13);
    b.writeUInt32BE(count, this.at + 21);
    b.set(hash.subarray(0, HASH_BYTES), this.at + 25);
    this.at += QEMU_ENTRY_HEADER + REF_BODY;
    this.refPages += count;
  }

  /** The payload to send; the builder starts over empty. */
  take(): Buffer {
    this.close();
    const out = this.buf.subarray(0, this.at);
    this.taken.push(this.buf);
    if (this.taken.length > 16) this.taken.shift(); // never known to be written out: left to the collector
    this.buf = this.fresh();
    this.at = 0;
    this.refPages = 0;
    return out;
  }

  private close(): void {
    if (this.open < 0) return;
    const length = this.at - this.open - QEMU_ENTRY_HEADER;
    if (length === 0) this.at = this.open; // an empty BYTES entry is never sent
    else this.buf.writeUInt32BE(length, this.open + 1);
    this.open = -1;
  }
}

/** Calls fn for each entry of a QEMU_STREAM payload; bodies are views of it. `diskBlocks` bounds references. */
export function decodeQemuStream(payload: Buffer, diskBlocks: number, fn: (e: QemuEntry) => void): void {
  let at = 0;
  while (at < payload.length) {
    if (at + QEMU_ENTRY_HEADER > payload.length) throw protocolError('QEMU_STREAM entry header overruns its frame');
    const kind = payload[at];
    const length = payload.readUInt32BE(at + 1);
    at += QEMU_ENTRY_HEADER;
    if (length > payload.length - at) throw protocolError('QEMU_STREAM entry body overruns its frame');
    const body = payload.subarray(at, at + length);
    at += length;
    if (kind === QEMU_ENTRY.BYTES) {
      if (length === 0) throw protocolError('empty BYTES entry');
      fn({ kind, data: body });
    } else if (kind === QEMU_ENTRY.REF_RUN) {
      fn(decodeRefRun(body, diskBlocks));
    } else {
      throw protocolError(`unknown QEMU_STREAM entry kind ${kind}`); // a byte stream cannot skip what it does not know
    }
  }
}

function decodeRefRun(body: Buffer, diskBlocks: number): QemuEntry {
  if (body.length !== REF_BODY) throw protocolError(`REF_RUN entry with a ${body.length}-byte body`);
  const offset = readU64(body, 0, 'REF_RUN offset');
  const block = readU64(body, 8, 'REF_RUN block');
  const count = body.readUInt32BE(16);
  if (count < 1 || count > MAX_REF_RUN) throw protocolError(`REF_RUN of ${count} pages`);
  if (offset % PAGE_SIZE) throw protocolError(`REF_RUN offset ${offset} is not page aligned`);
  if (offset + count * PAGE_SIZE > Number.MAX_SAFE_INTEGER) throw protocolError('REF_RUN offset out of range');
  if (block + count > diskBlocks) throw protocolError(`REF_RUN blocks ${block}..${block + count - 1} are past the end of the disk (${diskBlocks} blocks)`);
  return { kind: QEMU_ENTRY.REF_RUN, offset, block, count, hash: body.subarray(20, 20 + HASH_BYTES) };
}

export interface QemuAck {
  /** Every referenced page numbered below this is written to QEMU: the source may drop them. */
  refPages: number;
  /** Bytes of QEMU's stream written to the destination QEMU: the source bounds what is in flight by it. */
  streamBytes: number;
}

export function encodeQemuAck(a: QemuAck): Buffer {
  const b = Buffer.allocUnsafe(16);
  writeU64(b, a.refPages, 0);
  writeU64(b, a.streamBytes, 8);
  return b;
}

export function decodeQemuAck(payload: Buffer): QemuAck {
  if (payload.length !== 16) throw protocolError('malformed QEMU_ACK');
  return { refPages: readU64(payload, 0, 'QEMU_ACK'), streamBytes: readU64(payload, 8, 'QEMU_ACK') };
}

/** A range of referenced pages, numbered in stream order from 0. */
export type RefRange = [first: number, pages: number];

/** QEMU_REF_REQUEST: count u32, then count ranges (first u64 | pages u32): send these referenced pages in full. */
export function encodeRefRequest(ranges: readonly RefRange[]): Buffer {
  const b = Buffer.allocUnsafe(4 + ranges.length * QEMU_REF_RANGE);
  b.writeUInt32BE(ranges.length, 0);
  ranges.forEach(([first, pages], i) => {
    writeU64(b, first, 4 + i * QEMU_REF_RANGE);
    b.writeUInt32BE(pages, 12 + i * QEMU_REF_RANGE);
  });
  return b;
}

export function decodeRefRequest(payload: Buffer): RefRange[] {
  const count = payload.length >= 4 ? payload.readUInt32BE(0) : -1;
  if (count < 1 || payload.length !== 4 + count * QEMU_REF_RANGE) throw protocolError('malformed QEMU_REF_REQUEST');
  const out: RefRange[] = [];
  for (let i = 0; i < count; i++) {
    const first = readU64(payload, 4 + i * QEMU_REF_RANGE, 'QEMU_REF_REQUEST page');
    const pages = payload.readUInt32BE(12 + i * QEMU_REF_RANGE);
    if (pages < 1 || pages > MAX_REF_RUN) throw protocolError(`QEMU_REF_REQUEST range of ${pages} pages`);
    out.push([first, pages]);
  }
  return out;
}

/** QEMU_REF_DATA: first u64 | pages u32, then the pages' bytes. */
export function encodeRefData(first: number, data: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(12 + data.length);
  writeU64(b, first, 0);
  b.writeUInt32BE(data.length / PAGE_SIZE, 8);
  b.set(data, 12);
  return b;
}

export function decodeRefData(payload: Buffer): { first: number; pages: number; data: Buffer } {
  if (payload.length < 12) throw protocolError('malformed QEMU_REF_DATA');
  const first = readU64(payload, 0, 'QEMU_REF_DATA page');
  const pages = payload.readUInt32BE(8);
  if (pages < 1 || pages > MAX_REF_RUN || payload.length !== 12 + pages * PAGE_SIZE) throw protocolError('malformed QEMU_REF_DATA');
  return { first, pages, data: payload.subarray(12) };
}
