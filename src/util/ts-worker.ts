/** Starts a worker thread whose entry is a TypeScript module (see ts-worker-boot.mjs). */
import { Worker } from 'node:worker_threads';

export function startTsWorker(entry: URL, data: object): Worker {
  return new Worker(new URL('./ts-worker-boot.mjs', import.meta.url), { workerData: { ...data, entry: entry.href } });
}
