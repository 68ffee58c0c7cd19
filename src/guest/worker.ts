/**
 * The guest worker: runs a workload over guest memory, with its disk behind the
 * I/O interceptor. Pauses only between steps (a safe point: the step's I/O has
 * completed) and flushes the disk before saying it is paused, so every write it
 * made is on stable storage and its mappings are referenceable.
 */
import { parentPort } from 'node:worker_threads';
import { GuestMemory } from './memory.ts';
import { P2bMap } from '../p2b/map.ts';
import { Interceptor } from '../storage/interceptor.ts';
import { openBackend } from '../storage/open.ts';
import { Rng } from '../util/rng.ts';
import { GuestOs } from './workloads/guest-os.ts';
import { diskLayout } from './workloads/disk-layout.ts';
import { WORKLOADS } from './workloads/registry.ts';
import { PAGE_SIZE } from './layout.ts';
import type { DeviceState, WorkerInit, WorkerRequest, WorkerReply, WorkerEvent, WorkerStatus } from './messages.ts';
import type { BlockBackend } from '../storage/backend.ts';
import type { Workload } from './workloads/workload.ts';
import { LivemigError } from '../errors.ts';

/** Stands in for the disk while it is detached: any I/O then is a bug, and says so. */
const detachedDisk: BlockBackend = {
  size: 0,
  readOnly: true,
  description: 'detached',
  readInto: () => Promise.reject(new LivemigError('GUEST_DISK_DETACHED', 'the disk is detached')),
  write: () => Promise.reject(new LivemigError('GUEST_DISK_DETACHED', 'the disk is detached')),
  flush: () => Promise.resolve(),
  close: () => Promise.resolve(),
};

const port = parentPort!;
const send = (m: WorkerReply | WorkerEvent) => port.postMessage(m);
const errorOf = (err: unknown) => {
  const e = err as Error & { code?: string };
  return { code: typeof e.code === 'string' ? e.code : 'GUEST_ERROR', message: e.message };
};

async function main(init: WorkerInit): Promise<void> {
  const memory = GuestMemory.fromShared(init.memory);
  const map = P2bMap.fromShared(init.p2b);
  const spec = WORKLOADS[init.workload];
  // A destination started early has neither disk nor workload until 'load-device'.
  let backend: BlockBackend | null = init.deferDevice ? null : await openBackend(init.disk, { lock: false });
  const disk = new Interceptor(backend ?? detachedDisk, memory, map);
  let detached = backend === null;
  let rng!: Rng;
  let os!: GuestOs;
  let workload!: Workload;
  const build = (saved?: DeviceState) => {
    rng = new Rng(saved ? saved.rng : init.options.seed);
    os = new GuestOs(memory, disk, saved?.os);
    const layout = diskLayout(init.options.seed, Math.floor(disk.backend.size / PAGE_SIZE), spec.writeShare);
    workload = spec.factory({ memory, disk, os, rng, layout, options: init.options }, saved?.workloadState);
  };
  if (!init.deferDevice) build(init.device);

  let state: WorkerStatus['state'] = init.startPaused || init.deferDevice ? 'paused' : 'running';
  let throttle = 0;
  let steps = 0;
  let failure: { code: string; message: string } | undefined;
  let pauseWaiters: (() => void)[] = [];
  let resumeSignal: (() => void) | null = null;
  /** Ends the pacing sleep between steps early: a pause must not wait out a 100 ms idle period. */
  let wakeSleep: (() => void) | null = null;
  let stopping = false;

  const deviceState = (): DeviceState => ({
    version: 1,
    workload: init.workload,
    options: init.options,
    rng: rng.state(),
    os: os.state(),
    workloadState: workload.state(),
  });
  const status = (): WorkerStatus => ({
    state,
    throttle,
    steps,
    workload: workload ? workload.status() : { phase: 'waiting for device state' },
    disk: { ...disk.stats, description: backend?.description ?? 'detached', size: backend?.size ?? 0 },
    ...(failure ? { error: failure } : {}),
  });

  const attach = async () => {
    if (!detached) return;
    backend = await openBackend(init.disk, { lock: false });
    disk.backend = backend;
    detached = false;
  };

  port.on('message', async (req: WorkerRequest) => {
    try {
      switch (req.cmd) {
        case 'pause':
          if (state === 'running') await new Promise<void>((r) => (pauseWaiters.push(r), wakeSleep?.()));
          return send({ id: req.id, ok: true, result: status() });
        case 'resume':
          if (!workload) throw new LivemigError('GUEST_NO_DEVICE', 'no device state loaded yet');
          if (detached) throw new LivemigError('GUEST_DISK_DETACHED', 'the disk is detached; attach it before resuming');
          if (state === 'error') throw new LivemigError('GUEST_FAILED', `guest stopped after an error: ${failure?.message}`);
          if (state === 'paused') {
            state = 'running';
            resumeSignal?.();
          }
          return send({ id: req.id, ok: true, result: status() });
        case 'throttle':
          throttle = Math.max(0, Math.min(99, req.percent));
          return send({ id: req.id, ok: true, result: status() });
        case 'status':
          return send({ id: req.id, ok: true, result: status() });
        case 'step': {
          if (!workload) throw new LivemigError('GUEST_NO_DEVICE', 'no device state loaded yet');
          // Exactly `count` steps, unpaced, from a paused guest: how determinism is shown.
          if (state !== 'paused') throw new LivemigError('GUEST_RUNNING', 'step needs a paused guest');
          for (let i = 0; i < req.count; i++) {
            await workload.step();
            await os.drain();
            steps++;
          }
          await disk.flush();
          return send({ id: req.id, ok: true, result: status() });
        }
        case 'detach-disk':
          // Hands the disk over (its lock, its connection) while paused: one writer at a time.
          if (state === 'running') throw new LivemigError('GUEST_RUNNING', 'detach-disk needs a paused guest');
          if (!detached) {
            await backend!.close();
            detached = true;
          }
          return send({ id: req.id, ok: true, result: status() });
        case 'attach-disk':
          await attach();
          return send({ id: req.id, ok: true, result: status() });
        case 'load-device':
          if (workload) throw new LivemigError('GUEST_HAS_DEVICE', 'this guest already has its device state');
          await attach();
          build(req.device);
          return send({ id: req.id, ok: true, result: status() });
        case 'device-state':
          if (!workload) throw new LivemigError('GUEST_NO_DEVICE', 'no device state loaded yet');
          if (state === 'running') throw new LivemigError('GUEST_RUNNING', 'device state is only consistent while paused');
          return send({ id: req.id, ok: true, result: deviceState() });
        case 'stop':
          stopping = true;
          if (state === 'running') await new Promise<void>((r) => (pauseWaiters.push(r), wakeSleep?.()));
          if (!detached) await backend!.close();
          send({ id: req.id, ok: true, result: status() });
          return void process.nextTick(() => process.exit(0));
      }
    } catch (err) {
      send({ id: req.id, ok: false, error: errorOf(err) });
    }
  });

  send({ event: 'ready', diskSize: backend?.size ?? 0, diskDescription: backend?.description ?? init.disk });

  for (;;) {
    if (state !== 'running' || pauseWaiters.length > 0 || stopping) {
      if (state === 'running') {
        await disk.flush(); // the safe point: all of this guest's writes are durable
        state = 'paused';
      }
      for (const w of pauseWaiters.splice(0)) w();
      if (stopping) return;
      await new Promise<void>((r) => (resumeSignal = r));
      resumeSignal = null;
      continue;
    }
    const t0 = performance.now();
    let period: number;
    try {
      period = await workload.step();
      await os.drain(); // a step ends with its writebacks done: every step boundary is a safe point
      steps++;
    } catch (err) {
      // A disk error stops the guest where it is; memory stays intact for inspection or retry.
      failure = errorOf(err);
      state = 'error';
      send({ event: 'failed', error: failure });
      for (const w of pauseWaiters.splice(0)) w();
      await new Promise<void>(() => {}); // stay alive to answer status and dump requests
      return;
    }
    const took = performance.now() - t0;
    // Throttling stretches each step's time the way auto-converge takes CPU time from vCPUs.
    const sleep = Math.max(0, period - took) + (throttle > 0 ? ((Math.max(period, took) * throttle) / (100 - throttle)) : 0);
    if (sleep >= 1) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, sleep);
        wakeSleep = () => (clearTimeout(t), r());
      });
      wakeSleep = null;
    } else await new Promise((r) => setImmediate(r)); // let control messages in between steps
  }
}

/** The entry startTsWorker calls with the guest's WorkerInit. */
export default function run(init: WorkerInit): void {
  main(init).catch((err) => {
    send({ event: 'failed', error: errorOf(err) });
    process.exit(1);
  });
}
