/**
 * A hashing thread: keyed page hashes and chunk digests off the event loop.
 * Plain JavaScript on purpose: a worker that loads TypeScript through tsx spends
 * about 200 ms of CPU booting, and pools start per migration, inside the window
 * being measured. It imports nothing of ours: the protocol's constants (page size,
 * region size, HMAC algorithm) come in workerData from hash-pool.ts, which takes
 * them from src/wire; test/migrate/digests.test.ts checks the results.
 *
 * A job names ranges of pages as [firstPage, count] pairs, in guest memory (read
 * in place from its SharedArrayBuffers) or, with `buffer`, in a transferred
 * buffer of pages (moved back with the answer). Each range gets an HMAC-SHA-256
 * under the migration key: its first 16 bytes for page references, all 32 for
 * memory digests (`bytes`). Answer: { id, hashes, buffer? }.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createHmac } from 'node:crypto';

const { pageSize: PAGE_SIZE, regionShift: REGION_SHIFT, algorithm: ALGORITHM } = workerData.protocol;

// The key may come later ({ key }): a pool boots before the migration that brings the key.
let key = workerData.key ? Buffer.from(workerData.key, 'hex') : null;
const regions = (workerData.memory?.regions ?? []).map((b) => new Uint8Array(b));

/** Pages first..first+count of guest memory; a range never spans regions. */
function pagesOf(first, count) {
  const at = (first & ((1 << REGION_SHIFT) - 1)) * PAGE_SIZE;
  return regions[first >>> REGION_SHIFT].subarray(at, at + count * PAGE_SIZE);
}

const hmac = (data) => createHmac(ALGORITHM, key).update(data).digest();

parentPort.on('message', (job) => {
  if (job.key) return void (key = Buffer.from(job.key, 'hex'));
  const { ranges, bytes } = job;
  const out = new Uint8Array((ranges.length / 2) * bytes);
  for (let i = 0; i < ranges.length; i += 2) {
    const [first, count] = [ranges[i], ranges[i + 1]];
    const data = job.buffer ? new Uint8Array(job.buffer, first * PAGE_SIZE, count * PAGE_SIZE) : pagesOf(first, count);
    out.set(hmac(data).subarray(0, bytes), (i / 2) * bytes);
  }
  const transfer = job.buffer ? [job.buffer, out.buffer] : [out.buffer];
  parentPort.postMessage({ id: job.id, hashes: out, ...(job.buffer ? { buffer: job.buffer } : {}) }, transfer);
});
parentPort.postMessage({ ready: true }); // loaded: the pool is booted, not booting
