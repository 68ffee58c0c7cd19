/**
 * Big-endian reads over one buffer that throw NEED_MORE when the bytes are not there
 * yet: a record parser reads straight through, and the driver retries the whole
 * record once more bytes arrived. Parsers change no state before a record is complete.
 */
import { QemuStreamError } from './errors.ts';

/** Thrown (never escapes the parser) when a record continues past the bytes at hand. */
export const NEED_MORE = Symbol('need more bytes');

export class Cursor {
  buf: Buffer = Buffer.alloc(0);
  pos = 0;
  /** Absolute stream offset of buf[0], for error messages. */
  base = 0;

  reset(buf: Buffer, pos: number, base: number): void {
    this.buf = buf;
    this.pos = pos;
    this.base = base;
  }

  get available(): number {
    return this.buf.length - this.pos;
  }

  /** Absolute offset of the next byte. */
  get offset(): number {
    return this.base + this.pos;
  }

  need(n: number): void {
    if (this.buf.length - this.pos < n) throw NEED_MORE;
  }

  peek(): number {
    this.need(1);
    return this.buf[this.pos];
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }

  be16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  be32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** A 64-bit value as a number; values of 2^53 and more are malformed for our purposes. */
  be64(what: string): number {
    this.need(8);
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    if (hi >= 1 << 21) throw new QemuStreamError('QEMU_STREAM_MALFORMED', `${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} at byte ${this.offset} is out of range`);
    this.pos += 8;
    return hi * 2 ** 32 + lo;
  }

  /** A view of the next n bytes (no copy). */
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** A string with a one-byte length prefix, as QEMU writes id strings. */
  shortString(): string {
    const len = this.u8();
    return this.bytes(len).toString('latin1');
  }
}
