/**
 * Worker threads whose entry is a TypeScript module (see ts-worker-boot.mjs); the
 * entry's default export is called with the data. Booting one costs about 200 ms
 * of CPU (tsx registers its loader per thread) plus loading the entry's modules,
 * so a destination boots a spare ahead of time, entry loaded, and hands it the
 * data when a guest arrives.
 */
import { MessageChannel, Worker } from 'node:worker_threads';

const BOOT = new URL('./ts-worker-boot.mjs', import.meta.url);
const loadedOf = new WeakMap<Worker, Promise<void>>();

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
  const { port1, port2 } = new MessageChannel();
  const w = new Worker(BOOT, { workerData: { spare: true, entry: entry.href, loaded: port2 }, transferList: [port2] });
  w.unref(); // a spare alone keeps nothing alive; startTsWorker's caller owns it from then on
  port1.unref();
  loadedOf.set(w, new Promise<void>((resolve) => {
    const done = () => (port1.close(), resolve());
    port1.once('message', done);
    w.once('exit', done);
  }));
  return w;
}

/** Resolves once a spare has loaded its entry (or has ended): booted, no longer booting. */
export function spareLoaded(w: Worker): Promise<void> {
  return loadedOf.get(w) ?? Promise.resolve();
}
