/**
 * An incremental parser for QEMU's migration stream: feed it chunks as they arrive
 * (push), it calls `emit` with every record completed so far, and keeps at most one
 * incomplete record's bytes. Records are views into the chunks; one that straddles
 * two chunks is parsed from a small joined copy. Memory is bounded: no record is
 * longer than MAX_RECORD, and the device-state tail kept for the trailer check is
 * at most TAIL_KEEP plus one chunk. After an error every call throws that error.
 */
import { Cursor, NEED_MORE } from './cursor.ts';
import { QemuStreamError } from './errors.ts';
import type { QemuRecord } from './records.ts';
import { ParserState } from './state.ts';
import { parseHeader, parseTopLevel } from './top-level.ts';
import { parseRamFooter, parseRamRecord } from './ram.ts';
import { findTrailer } from './trailer.ts';
import { TARGET_PAGE_SIZE } from './constants.ts';

/** The longest record: a configuration with its subsections (a page with its block name is 4360 bytes). */
export const MAX_RECORD = 64 << 10;
/** A straddling record usually is a page: join this much first, MAX_RECORD only if that was not enough. */
const SMALL_JOIN = 8 + 1 + 255 + TARGET_PAGE_SIZE;
/** Device-state bytes kept to find EOF and the VMDESCRIPTION at the end. */
export const TAIL_KEEP = 4 << 20;

export type Emit = (record: QemuRecord) => void;

export class QemuStreamParser {
  private readonly c = new Cursor();
  private readonly s = new ParserState();
  private carry: Buffer | null = null;
  /** Absolute stream offset of the next chunk's first byte. */
  private fed = 0;
  private failed: Error | null = null;
  private readonly tail: Buffer[] = [];
  private tailBytes = 0;

  /** Bytes fed so far. */
  get offset(): number {
    return this.fed;
  }

  push(chunk: Buffer, emit: Emit): void {
    if (this.failed) throw this.failed;
    try {
      const start = this.carry ? this.drainCarry(chunk, emit) : 0;
      if (start >= 0) this.keepRest(chunk, this.run(chunk, start, chunk.length, this.fed, emit));
      this.fed += chunk.length;
    } catch (err) {
      throw (this.failed = err as Error);
    }
  }

  /** The input ended: refuses a stream cut short, else emits `end` with where EOF and VMDESCRIPTION were. */
  end(emit: Emit): void {
    if (this.failed) throw this.failed;
    const truncated = (why: string) => (this.failed = new QemuStreamError('QEMU_STREAM_TRUNCATED', `the stream ended ${why} after ${this.fed} bytes: truncated`));
    if (this.fed === 0) throw truncated('before its header');
    if (this.carry) throw truncated(`inside a record (${this.s.phase})`);
    if (this.s.phase !== 'device') throw truncated(`before the device state (${this.s.phase === 'magic' ? 'in the header' : `in phase ${this.s.phase}`})`);
    const tail = Buffer.concat(this.tail);
    const trailer = findTrailer(tail, this.fed - tail.length);
    if (!trailer) throw truncated('without QEMU_VM_EOF and a VMDESCRIPTION');
    emit({ kind: 'end', ...trailer });
  }

  /** Parses records starting in [pos, limit) of `buf`; returns where the first incomplete one starts. */
  private run(buf: Buffer, pos: number, limit: number, base: number, emit: Emit): number {
    const c = this.c;
    c.reset(buf, pos, base);
    while (c.pos < limit) {
      if (this.s.phase === 'device') {
        this.emitDevice(buf.subarray(c.pos, limit), emit);
        return limit;
      }
      const at = c.pos;
      let record: QemuRecord | null;
      try {
        record = this.parseOne();
      } catch (err) {
        if (err !== NEED_MORE) throw err;
        return at;
      }
      this.s.records++;
      if (record) emit(record);
    }
    return c.pos;
  }

  private parseOne(): QemuRecord | null {
    switch (this.s.phase) {
      case 'magic':
        return parseHeader(this.c, this.s);
      case 'top':
        return parseTopLevel(this.c, this.s);
      case 'ram':
        return parseRamRecord(this.c, this.s);
      default:
        return parseRamFooter(this.c, this.s);
    }
  }

  /**
   * Completes the record(s) starting in the carried bytes with the head of `chunk`.
   * Returns where parsing goes on in `chunk`, or -1 when all of it joined the carry.
   */
  private drainCarry(chunk: Buffer, emit: Emit): number {
    for (const extra of [SMALL_JOIN, MAX_RECORD]) {
      const carry = this.carry!;
      const base = this.fed - carry.length;
      const take = Math.min(chunk.length, extra);
      const joined = Buffer.concat([carry, chunk.subarray(0, take)]);
      const pos = this.run(joined, 0, carry.length, base, emit);
      if (pos >= carry.length) {
        this.carry = null;
        return pos - carry.length;
      }
      this.carry = carry.subarray(pos); // what was completed is gone; the rest waits
      if (take === chunk.length) {
        this.carry = joined.subarray(pos);
        if (this.carry.length >= MAX_RECORD) throw this.tooLong(base + pos);
        return -1;
      }
    }
    throw this.tooLong(this.fed - this.carry!.length);
  }

  private keepRest(chunk: Buffer, pos: number): void {
    if (pos >= chunk.length) return;
    if (chunk.length - pos >= MAX_RECORD) throw this.tooLong(this.fed + pos);
    this.carry = chunk.subarray(pos);
  }

  private tooLong(at: number): QemuStreamError {
    return new QemuStreamError('QEMU_STREAM_MALFORMED', `a record at byte ${at} is longer than ${MAX_RECORD} bytes`);
  }

  private emitDevice(data: Buffer, emit: Emit): void {
    if (data.length === 0) return;
    this.tail.push(data);
    this.tailBytes += data.length;
    while (this.tailBytes - this.tail[0].length >= TAIL_KEEP) this.tailBytes -= this.tail.shift()!.length;
    emit({ kind: 'device-state', data });
  }
}

/** Records of a whole stream, pulled chunk by chunk (back-pressure: the source is read as records are consumed). */
export async function* parseQemuStream(source: AsyncIterable<Buffer>): AsyncGenerator<QemuRecord> {
  const parser = new QemuStreamParser();
  const out: QemuRecord[] = [];
  const collect: Emit = (r) => void out.push(r);
  for await (const chunk of source) {
    try {
      parser.push(chunk, collect);
    } finally {
      yield* out.splice(0); // what was parsed before an error still comes out, then the error
    }
  }
  try {
    parser.end(collect);
  } finally {
    yield* out.splice(0);
  }
}
