/**
 * The content index's lookup hash: XXH64 of a 4 KiB block with a per-index seed,
 * as two 32-bit halves (no BigInt in the index). XXH64 through @node-rs/xxhash
 * was the fastest per-block hash measured in Node here (~0.55-0.9 µs per 4 KiB
 * against 3.2 µs for node:crypto SHA-1 and 6.6 µs for MD5; `npm run bench --
 * cindex` repeats the comparison). It only finds candidates: equality is decided
 * by a keyed cryptographic hash at the destination. The seed keeps a guest from
 * crafting blocks that pile up in one corner of the hash table.
 */
import { xxh64 } from '@node-rs/xxhash';
import { randomBytes } from 'node:crypto';

export const BLOCK_SIZE = 4096;
export const HASH_NAME = 'xxh64';
const LOW = 0xffffffffn;

/** A 64-bit hash as [hi, lo], each an unsigned 32-bit number. */
export class BlockHasher {
  readonly seedHex: string;
  private readonly seed: bigint;
  /** Halves of the last hash computed (read right after hash()). */
  hi = 0;
  lo = 0;
  readonly zeroHi: number;
  readonly zeroLo: number;

  constructor(seedHex: string = randomBytes(8).toString('hex')) {
    if (!/^[0-9a-f]{16}$/.test(seedHex)) throw new RangeError(`hash seed must be 16 hex digits, got ${JSON.stringify(seedHex)}`);
    this.seedHex = seedHex;
    this.seed = BigInt(`0x${seedHex}`);
    this.hash(Buffer.alloc(BLOCK_SIZE));
    this.zeroHi = this.hi;
    this.zeroLo = this.lo;
  }

  /** Hashes one block; the result is in this.hi / this.lo. */
  hash(block: Uint8Array): void {
    const h = xxh64(block, this.seed);
    this.hi = Number(h >> 32n);
    this.lo = Number(h & LOW);
  }

  /** True when the last hash is the all-zero block's (such blocks are not indexed). */
  get lastIsZero(): boolean {
    return this.hi === this.zeroHi && this.lo === this.zeroLo;
  }
}

/** "0123456789abcdef" <-> [hi, lo]: how hashes are written in files, on the socket, and by the tool. */
export function hashToHex(hi: number, lo: number): string {
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}

export function hexToHash(hex: string): [number, number] | null {
  if (!/^[0-9a-fA-F]{16}$/.test(hex)) return null;
  return [parseInt(hex.slice(0, 8), 16), parseInt(hex.slice(8), 16)];
}
