// Worker threads do not inherit tsx's loader on Node 20: register it, load the
// TypeScript entry, and call its default export with the data, given at start
// or, for a spare booted ahead, in its first message.
import { parentPort, workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
const loaded = import(workerData.entry);
// A spare says on a port of its own (not the guest's channel) when its entry has loaded, or failed to.
const told = () => workerData.loaded?.postMessage('loaded');
if (workerData.spare) loaded.then(told, told);
const start = workerData.spare ? await new Promise((resolve) => parentPort.once('message', resolve)) : workerData;
const entry = start.entry === workerData.entry ? await loaded : await import(start.entry);
entry.default(start.data);
