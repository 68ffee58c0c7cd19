/**
 * XBZRLE, the delta of a page against an older version of it (the format of
 * QEMU's migration/xbzrle.c, written anew): alternating runs, each length a
 * ULEB128, of bytes that did not change (length only) and bytes that did
 * (length, then the new bytes); the first unchanged run may be empty, no other
 * run may; a trailing unchanged run is left out. Decoding checks every length
 * against the page and the delta, so a hostile delta is a protocol error.
 */
import { LivemigError } from '../errors.ts';
import { PAGE_SIZE } from './protocol.ts';

const protocolError = (what: string) => new LivemigError('MIGRATE_PROTOCOL', `XBZRLE delta: ${what}`);

function writeLength(out: Uint8Array, at: number, n: number): number {
  if (n < 0x80) {
    out[at] = n;
    return at + 1;
  }
  out[at] = (n & 0x7f) | 0x80;
  out[at + 1] = n >>> 7;
  return at + 2;
}

/**
 * Encodes `now` against `old` (pages of equal length) into `out`; returns the
 * delta's length, 0 when nothing changed, or -1 when it would exceed `limit` bytes.
 */
export function xbzrleEncode(old: Uint8Array, now: Uint8Array, out: Uint8Array, limit = out.length): number {
  const n = now.length;
  limit = Math.min(limit, out.length);
  // Word compares find runs 4 bytes at a time; byte compares settle their edges.
  const aligned = old.byteOffset % 4 === 0 && now.byteOffset % 4 === 0 && n % 4 === 0;
  const o32 = aligned ? new Uint32Array(old.buffer, old.byteOffset, n >> 2) : null;
  const n32 = aligned ? new Uint32Array(now.buffer, now.byteOffset, n >> 2) : null;
  let i = 0;
  let d = 0;
  while (i < n) {
    const zStart = i;
    if (o32 && n32) {
      while (i % 4 !== 0 && i < n && old[i] === now[i]) i++;
      if (i % 4 === 0) while (i < n && o32[i >> 2] === n32[i >> 2]) i += 4;
    }
    while (i < n && old[i] === now[i]) i++;
    if (i === n) return d; // the trailing unchanged run is left out (d is 0 when nothing changed)
    const nzStart = i;
    if (o32 && n32) {
      while (i % 4 !== 0 && i < n && old[i] !== now[i]) i++;
      // A word all of whose bytes differ continues the run.
      if (i % 4 === 0) while (i < n && allBytesDiffer(o32[i >> 2] ^ n32[i >> 2])) i += 4;
    }
    while (i < n && old[i] !== now[i]) i++;
    const nz = i - nzStart;
    if (d + 4 + nz > limit) return -1;
    d = writeLength(out, d, nzStart - zStart);
    d = writeLength(out, d, nz);
    out.set(now.subarray(nzStart, i), d);
    d += nz;
  }
  return d;
}

const allBytesDiffer = (x: number) => (x & 0xff) !== 0 && (x & 0xff00) !== 0 && (x & 0xff0000) !== 0 && (x & 0xff000000) !== 0;

/** Reads a run length at `at`; [length, next offset]. */
function readLength(delta: Uint8Array, at: number): [number, number] {
  if (at >= delta.length) throw protocolError('ends inside a run length');
  const b0 = delta[at];
  if (b0 < 0x80) return [b0, at + 1];
  if (at + 1 >= delta.length) throw protocolError('ends inside a run length');
  const b1 = delta[at + 1];
  // Two bytes reach 16383, more than a page: a longer length is malformed.
  if (b1 & 0x80) throw protocolError('run length longer than two bytes');
  return [(b0 & 0x7f) | (b1 << 7), at + 2];
}

/** Applies a delta to `page` in place (its older version). Throws MIGRATE_PROTOCOL on a malformed delta; then `page` may be half-changed. */
export function xbzrleDecode(delta: Uint8Array, page: Uint8Array): void {
  let i = 0;
  let d = 0;
  while (i < delta.length) {
    const first = i === 0;
    let run: number;
    [run, i] = readLength(delta, i);
    if (run === 0 && !first) throw protocolError('an empty unchanged run after the first');
    d += run;
    [run, i] = readLength(delta, i);
    if (run === 0) throw protocolError('an empty changed run');
    if (d + run > page.length) throw protocolError(`a run ends at byte ${d + run}, past the ${page.length}-byte page`);
    if (i + run > delta.length) throw protocolError('a changed run overruns the delta');
    page.set(delta.subarray(i, i + run), d);
    d += run;
    i += run;
  }
}

/** The longest delta worth sending: beyond it the page goes whole (or compressed). */
export const XBZRLE_LIMIT = (PAGE_SIZE * 3) / 4;
