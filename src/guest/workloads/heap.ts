/**
 * What heap memory holds and how it is written: `--heap random` (every byte
 * random, the worst case for compression and deltas) or `--heap compressible`
 * (what real heaps hold: arrays of records with small integers and pointers
 * sharing their high bits, text, runs of zeros); `--write-size` rewrites that
 * many bytes of a page instead of all of it. Deterministic: every draw from the
 * workload's generator happens when the write is decided, the bytes follow from it.
 */
import { PAGE_SIZE } from '../layout.ts';
import type { Rng } from '../../util/rng.ts';
import { anonFill } from './guest-os.ts';

export const HEAP_KINDS = ['random', 'compressible'] as const;
export type HeapKind = (typeof HEAP_KINDS)[number];

/** Checks --heap and --write-size; a message for the user, or null when they are fine. */
export function heapOptionsProblem(heap: unknown, writeSize: unknown): string | null {
  if (heap !== undefined && !HEAP_KINDS.includes(heap as HeapKind)) return `--heap must be ${HEAP_KINDS.join(' or ')}`;
  if (writeSize !== undefined && (!Number.isInteger(writeSize) || (writeSize as number) < 1 || (writeSize as number) > PAGE_SIZE)) {
    return `--write-size must be 1..${PAGE_SIZE} bytes`;
  }
  return null;
}

const WORDS = ['the', 'user', 'id', 'name', 'value', 'error', 'true', 'false', 'null', 'request', 'session', 'GET', '/api/v1/items', 'status', '200', 'OK', 'timestamp', 'count'];
const TAGS = ['order\0\0\0', 'item\0\0\0\0', 'customer', 'invoice\0', 'payment\0', 'cart\0\0\0\0'].map((t) => Buffer.from(t, 'latin1'));
const SEGMENT = 256;

/** xorshift32 over one seed: the bytes of one fill, cheap and reproducible. */
const nextRandom = (x: number) => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return x >>> 0;
};

/** 32-byte records: id u32 | small int u32 | pointer u64 (shared high bits) | tag 8 bytes | zero padding. */
function records(out: Buffer, at: number, end: number, seed: number): number {
  let x = seed || 1;
  const id0 = seed & 0xfffff;
  for (let r = 0; at + 32 <= end; r++, at += 32) {
    x = nextRandom(x);
    out.writeUInt32LE(id0 + r, at);
    out.writeUInt32LE(x % 100, at + 4);
    out.writeUInt32LE((0x5a3c0000 | (x & 0xfff0)) >>> 0, at + 8);
    out.writeUInt32LE(0x00007f3a, at + 12);
    TAGS[(x >>> 16) % TAGS.length].copy(out, at + 16);
    out.fill(0, at + 24, at + 32);
  }
  out.fill(0, at, end);
  return x;
}

/** Words from a small vocabulary, as in logs, JSON and strings. */
function text(out: Buffer, at: number, end: number, seed: number): number {
  let x = seed || 1;
  while (at < end) {
    x = nextRandom(x);
    at += out.write(WORDS[x % WORDS.length], at, end - at, 'latin1');
    if (at < end) out[at++] = (x >>> 8) % 8 === 0 ? 10 : 32;
  }
  return x;
}

/** Fills out[0, length) segment by segment: records, text or zeros. */
function heapBytes(out: Buffer, length: number, seed: number): void {
  let x = seed || 1;
  for (let at = 0; at < length; at += SEGMENT) {
    const end = Math.min(length, at + SEGMENT);
    x = nextRandom(x);
    const kind = x % 20;
    if (kind < 9) x = records(out, at, end, x);
    else if (kind < 15) x = text(out, at, end, x);
    else out.fill(0, at, end);
  }
}

const scratch = Buffer.alloc(PAGE_SIZE);

/** A new heap page's content. */
export function heapFill(rng: Rng, heap: HeapKind): (view: Uint8Array) => void {
  if (heap === 'random') return anonFill(rng, rng.float() < 0.33); // mostly random, a third text-like
  const seed = rng.u32();
  return (view) => heapBytes(Buffer.from(view.buffer, view.byteOffset, view.byteLength), PAGE_SIZE, seed);
}

/** One write into a heap page: `size` bytes at an 8-byte aligned offset (the whole page at 4096). */
export function heapWrite(rng: Rng, heap: HeapKind, size: number): (view: Uint8Array) => void {
  if (size >= PAGE_SIZE && heap === 'random') return anonFill(rng); // today's `dirty`, draw for draw
  const at = Math.floor(rng.float() * (Math.floor((PAGE_SIZE - size) / 8) + 1)) * 8;
  if (heap === 'random') {
    const bytes = new Uint8Array(size);
    rng.fill(bytes);
    return (view) => view.set(bytes, at);
  }
  const seed = rng.u32();
  return (view) => {
    heapBytes(scratch, size, seed);
    view.set(scratch.subarray(0, size), at);
  };
}
