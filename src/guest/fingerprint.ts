/**
 * The oracle's view of guest memory: a SHA-256 of every MiB, computed anew from
 * the bytes each time. It shares nothing with the migration engine (no dirty
 * log, no cached digest, no key), so a bug in the engine's bookkeeping cannot
 * make two different memories look equal. Tests, benchmarks and the demo compare
 * the source's fingerprint at pause with the destination's before it runs.
 */
import { createHash } from 'node:crypto';
import type { GuestMemory } from './memory.ts';

export const FINGERPRINT_CHUNK_BYTES = 1 << 20;

export interface Fingerprint {
  memoryBytes: number;
  chunkBytes: number;
  /** SHA-256 (hex) of each chunk of memory, in order; the last chunk may be short. */
  chunks: string[];
  /** How long computing it took on this host. */
  ms: number;
}

export function fingerprint(memory: GuestMemory): Fingerprint {
  const t0 = performance.now();
  const chunks: string[] = [];
  for (const region of memory.regions) {
    for (let at = 0; at < region.length; at += FINGERPRINT_CHUNK_BYTES) {
      chunks.push(createHash('sha256').update(region.subarray(at, Math.min(region.length, at + FINGERPRINT_CHUNK_BYTES))).digest('hex'));
    }
  }
  return { memoryBytes: memory.memoryBytes, chunkBytes: FINGERPRINT_CHUNK_BYTES, chunks, ms: Math.round(performance.now() - t0) };
}

export interface FingerprintComparison {
  equal: boolean;
  /** Chunks that differ (all of them when the sizes differ). */
  differentChunks: number;
  /** The first differing chunk's byte offset in memory, or null. */
  firstDifference: number | null;
}

export function compareFingerprints(a: Fingerprint, b: Fingerprint): FingerprintComparison {
  if (a.memoryBytes !== b.memoryBytes || a.chunkBytes !== b.chunkBytes || a.chunks.length !== b.chunks.length) {
    return { equal: false, differentChunks: Math.max(a.chunks.length, b.chunks.length), firstDifference: 0 };
  }
  let differentChunks = 0;
  let first = -1;
  a.chunks.forEach((h, i) => {
    if (h === b.chunks[i]) return;
    differentChunks++;
    if (first < 0) first = i;
  });
  return { equal: differentChunks === 0, differentChunks, firstDifference: first < 0 ? null : first * a.chunkBytes };
}
