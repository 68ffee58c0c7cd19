/**
 * A hashing thread: keyed page hashes and chunk digests off the event loop.
 * Plain JavaScript on purpose: a worker that loads TypeScript through tsx spends
 * about 200 ms of CPU booting, and pools start per migration, inside the window
 * being measured. It imports nothing of ours, so the few constants it needs are
 * repeated here; test/migrate/hash-pool.test.ts checks them against the TypeScript.
 *
 * Jobs (answered with { id, hashes } and the transferred buffer, if any):
 *   { buffer, count }  HMAC-SHA-256/128 of each 4 KiB page of a transferred buffer
 *   { pages }          the same for pages of the shared guest memory, read in place
 *   { chunks, chunkPages }  HMAC-SHA-256 (32 bytes) over each chunk of guest memory
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createHmac } from 'node:crypto';

const PAGE_SIZE = 4096; // src/guest/layout.ts
const REGION_SHIFT = 18; // 2^18 pages per 1 GiB region (src/guest/layout.ts)
const HASH_BYTES = 16; // src/wire/frames.ts
const DIGEST_BYTES = 32;

const key = Buffer.from(workerData.key, 'hex');
const regions = (workerData.memory?.regions ?? []).map((b) => new Uint8Array(b));
const totalPages = (workerData.memory?.memoryBytes ?? 0) / PAGE_SIZE;

/** Pages first..first+count of guest memory; a range never spans regions. */
function pagesOf(first, count) {
  const at = (first & ((1 << REGION_SHIFT) - 1)) * PAGE_SIZE;
  return regions[first >>> REGION_SHIFT].subarray(at, at + count * PAGE_SIZE);
}

const hmac = (data) => createHmac('sha256', key).update(data).digest();

parentPort.on('message', (job) => {
  let out;
  if (job.chunks) {
    out = new Uint8Array(job.chunks.length * DIGEST_BYTES);
    for (let i = 0; i < job.chunks.length; i++) {
      const first = job.chunks[i] * job.chunkPages; // the last chunk may be short
      out.set(hmac(pagesOf(first, Math.min(job.chunkPages, totalPages - first))), i * DIGEST_BYTES);
    }
  } else {
    const count = job.pages ? job.pages.length : job.count;
    out = new Uint8Array(count * HASH_BYTES);
    for (let i = 0; i < count; i++) {
      const data = job.pages ? pagesOf(job.pages[i], 1) : new Uint8Array(job.buffer, i * PAGE_SIZE, PAGE_SIZE);
      out.set(hmac(data).subarray(0, HASH_BYTES), i * HASH_BYTES);
    }
  }
  const transfer = job.buffer ? [job.buffer, out.buffer] : [out.buffer];
  parentPort.postMessage({ id: job.id, hashes: out, ...(job.buffer ? { buffer: job.buffer } : {}) }, transfer);
});
