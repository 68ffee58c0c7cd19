/**
 * Worker threads whose entry is a TypeScript module (see ts-worker-boot.mjs); the
 * entry's default export is called with the data. Booting one costs about 200 ms
 * of CPU (tsx registers its loader per thread) plus loading the entry's modules,
 * so a destination boots a spare ahead of time, entry loaded, and hands it the
 * data when a guest arrives.
 */
import { Worker } from 'node:worker_threads';

const BOOT = new URL('./ts-worker-boot.mjs', import.meta.url);

export function startTsWorker(entry: URL, data: object, spare?: Worker): Worker {
  if (spare) {
    spare.ref();
    spare.postMessage({ entry: entry.href, data });
    return spare;
  }
  return new Worker(BOOT, { workerData: { entry: entry.href, data } });
}

/** A booted worker with `entry` loaded, waiting for startTsWorker to give it data. Terminate it if unused. */
export function spareTsWorker(entry: URL): Worker {
  const w = new Worker(BOOT, { workerData: { spare: true, entry: entry.href } });
  w.unref(); // a spare alone keeps nothing alive; startTsWorker's caller owns it from then on
  return w;
}
