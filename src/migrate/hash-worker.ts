/**
 * A hashing thread: keyed page hashes (HMAC-SHA-256, 128 bits) off the event
 * loop. Jobs hash either a transferred buffer of pages or pages of guest memory
 * read in place from its SharedArrayBuffers.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory, type SharedMemory } from '../guest/memory.ts';
import { PAGE_SIZE } from '../guest/layout.ts';
import { pageHash } from '../wire/handshake.ts';
import { HASH_BYTES } from '../wire/frames.ts';

const key = Buffer.from(workerData.key as string, 'hex');
const memory = workerData.memory ? GuestMemory.fromShared(workerData.memory as SharedMemory) : null;

export type HashJob = { id: number; buffer: ArrayBuffer; count: number } | { id: number; pages: Uint32Array };

parentPort!.on('message', (job: HashJob) => {
  const count = 'pages' in job ? job.pages.length : job.count;
  const out = new Uint8Array(count * HASH_BYTES);
  for (let i = 0; i < count; i++) {
    const data = 'pages' in job ? memory!.page(job.pages[i]) : new Uint8Array(job.buffer, i * PAGE_SIZE, PAGE_SIZE);
    out.set(pageHash(key, data), i * HASH_BYTES);
  }
  const transfer = 'buffer' in job ? [job.buffer, out.buffer] : [out.buffer];
  parentPort!.postMessage({ id: job.id, hashes: out, ...('buffer' in job ? { buffer: job.buffer } : {}) }, transfer);
});
