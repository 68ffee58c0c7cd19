/**
 * Equality across hosts is decided by keyed hashes: HMAC-SHA-256 under the
 * migration key, truncated to HASH_BYTES for page references, whole for memory
 * digests. A guest that can write any bytes cannot make the destination accept
 * content other than the source's without the key.
 */
import { createHmac } from 'node:crypto';
import { HASH_BYTES, STORAGE_SAMPLES } from './protocol.ts';

export const HMAC_ALGORITHM = 'sha256';

/** The keyed hash a reference carries for its page (or run of pages). */
export function pageHash(key: Buffer, data: Uint8Array): Buffer {
  return createHmac(HMAC_ALGORITHM, key).update(data).digest().subarray(0, HASH_BYTES);
}

/** A memory-digest chunk's or region's digest (32 bytes). */
export function digest(key: Buffer, data: Uint8Array): Buffer {
  return createHmac(HMAC_ALGORITHM, key).update(data).digest();
}

/** Which blocks to sample for the storage identity: spread over the disk, chosen by the key. */
export function sampleBlocks(key: Buffer, blocks: number, count = STORAGE_SAMPLES): number[] {
  const out: number[] = [];
  for (let i = 0; i < count && blocks > 0; i++) {
    const h = createHmac(HMAC_ALGORITHM, key).update(`sample-${i}`).digest();
    out.push(Number(h.readBigUInt64BE(0) % BigInt(blocks)));
  }
  return out;
}
