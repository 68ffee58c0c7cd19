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
import { DEVICE_STATE_VERSION, encodeDeviceState } from './device-state.ts';

const detachedError = () => Promise.reject(new LivemigError('GUEST_DISK_DETACHED', 'the disk is detached'));
/** Stands in for the disk while it is detached: any I/O then is a bug, and says so. */
const detachedDisk: BlockBackend = { size: 0, readOnly: true, description: 'detached', readInto: detachedError, write: detachedError, flush: () => Promise.resolve(), close: () => Promise.resolve() };

const port = parentPort!;
const send = (m: WorkerReply | WorkerEvent) => port.postMessage(m);
const errorOf = (err: unknown) => {
  const e = err as Error & { code?: string };
  return { code: typeof e.code === 'string' ? e.code : 'GUEST_FAILED', message: e.message };
};
const refuse = (code: 'GUEST_NO_DEVICE' | 'GUEST_RUNNING' | 'GUEST_HAS_DEVICE' | 'GUEST_DISK_DETACHED' | 'GUEST_FAILED', message: string): never => {
  throw new LivemigError(code, message);
};

class GuestWorker {
  private readonly memory: GuestMemory;
  private readonly disk: Interceptor;
  private backend: BlockBackend | null;
  private rng!: Rng;
  private os!: GuestOs;
  private workload: Workload | null = null;
  private state: WorkerStatus['state'];
  private throttle = 0;
  private steps = 0;
  private failure: { code: string; message: string } | undefined;
  private pauseWaiters: (() => void)[] = [];
  private resumeSignal: (() => void) | null = null;
  /** Ends the pacing sleep between steps early: a pause must not wait out a 100 ms idle period. */
  private wakeSleep: (() => void) | null = null;
  private stopping = false;

  constructor(private readonly init: WorkerInit, backend: BlockBackend | null) {
    this.memory = GuestMemory.fromShared(init.memory);
    this.backend = backend;
    this.disk = new Interceptor(backend ?? detachedDisk, this.memory, P2bMap.fromShared(init.p2b));
    this.state = init.startPaused || init.deferDevice ? 'paused' : 'running';
    if (!init.deferDevice) this.build(init.device);
  }

  private build(saved?: DeviceState): void {
    const { init, memory, disk } = this;
    const spec = WORKLOADS[init.workload];
    this.rng = new Rng(saved ? saved.rng : init.options.seed);
    this.os = new GuestOs(memory, disk, saved?.os);
    const layout = diskLayout(init.options.seed, Math.floor(disk.backend.size / PAGE_SIZE), spec.writeShare);
    this.workload = spec.factory({ memory, disk, os: this.os, rng: this.rng, layout, options: init.options }, saved?.workloadState);
  }

  private deviceState(): DeviceState {
    return { version: DEVICE_STATE_VERSION, workload: this.init.workload, options: this.init.options, rng: this.rng.state(), os: this.os.state(), workloadState: this.workload!.state() };
  }

  status(): WorkerStatus {
    const { backend } = this;
    return {
      state: this.state, throttle: this.throttle, steps: this.steps,
      workload: this.workload ? this.workload.status() : { phase: 'waiting for device state' },
      disk: { ...this.disk.stats, description: backend?.description ?? 'detached', size: backend?.size ?? 0 },
      ...(this.failure ? { error: this.failure } : {}),
    };
  }

  private async attach(): Promise<void> {
    if (this.backend) return;
    this.backend = await openBackend(this.init.disk, { lock: false, leaseToken: this.init.leaseToken });
    this.disk.backend = this.backend;
  }

  private async detach(): Promise<void> {
    if (!this.backend) return;
    await this.backend.close();
    this.backend = null;
    this.disk.backend = detachedDisk;
  }

  private pauseSoon(): Promise<void> {
    return this.state === 'running' ? new Promise<void>((r) => (this.pauseWaiters.push(r), this.wakeSleep?.())) : Promise.resolve();
  }

  /** Exactly `count` steps, unpaced, from a paused guest: how determinism is shown. */
  private async step(count: number): Promise<void> {
    if (!this.workload) refuse('GUEST_NO_DEVICE', 'no device state loaded yet');
    if (this.state !== 'paused') refuse('GUEST_RUNNING', 'step needs a paused guest');
    for (let i = 0; i < count; i++) {
      await this.workload!.step();
      await this.os.drain();
      this.steps++;
    }
    await this.disk.flush();
  }

  private resume(): void {
    if (!this.workload) refuse('GUEST_NO_DEVICE', 'no device state loaded yet');
    if (!this.backend) refuse('GUEST_DISK_DETACHED', 'the disk is detached; attach it before resuming');
    if (this.state === 'error') refuse('GUEST_FAILED', `guest stopped after an error: ${this.failure?.message}`);
    if (this.state === 'paused') {
      this.state = 'running';
      this.resumeSignal?.();
    }
  }

  /** One control request; the reply carries the status, or the device state. */
  async handle(req: WorkerRequest): Promise<unknown> {
    switch (req.cmd) {
      case 'pause': return this.pauseSoon();
      case 'resume': return this.resume();
      case 'throttle': return void (this.throttle = Math.max(0, Math.min(99, req.percent)));
      case 'status': return;
      case 'step': return this.step(req.count);
      case 'attach-disk': return this.attach();
      case 'detach-disk':
        // Hands the disk over (its lock, its connection) while paused: one writer at a time.
        if (this.state === 'running') refuse('GUEST_RUNNING', 'detach-disk needs a paused guest');
        return this.detach();
      case 'load-device':
        if (this.workload) refuse('GUEST_HAS_DEVICE', 'this guest already has its device state');
        await this.attach();
        return this.build(req.device);
      case 'device-state':
        if (!this.workload) refuse('GUEST_NO_DEVICE', 'no device state loaded yet');
        if (this.state === 'running') refuse('GUEST_RUNNING', 'device state is only consistent while paused');
        return encodeDeviceState(this.deviceState());
      case 'stop':
        this.stopping = true;
        await this.pauseSoon();
        await this.detach();
    }
  }

  /** Runs steps while running; at each pause request, flushes first: the safe point. */
  async loop(): Promise<void> {
    for (;;) {
      if (this.state !== 'running' || this.pauseWaiters.length > 0 || this.stopping) {
        if (this.state === 'running') {
          await this.disk.flush(); // the safe point: all of this guest's writes are durable
          this.state = 'paused';
        }
        for (const w of this.pauseWaiters.splice(0)) w();
        if (this.stopping) return;
        await new Promise<void>((r) => (this.resumeSignal = r));
        this.resumeSignal = null;
        continue;
      }
      if (!(await this.stepPaced())) return;
    }
  }

  /** One workload step, then the pause its period and the throttle ask for; false once the guest failed. */
  private async stepPaced(): Promise<boolean> {
    const t0 = performance.now();
    let period: number;
    try {
      period = await this.workload!.step();
      await this.os.drain(); // a step ends with its writebacks done: every step boundary is a safe point
      this.steps++;
    } catch (err) {
      // A disk error stops the guest where it is; memory stays intact for inspection or retry.
      this.failure = errorOf(err);
      this.state = 'error';
      send({ event: 'failed', error: this.failure });
      for (const w of this.pauseWaiters.splice(0)) w();
      return false;
    }
    const took = performance.now() - t0;
    // Throttling stretches each step's time the way auto-converge takes CPU time from vCPUs.
    const sleep = Math.max(0, period - took) + (this.throttle > 0 ? (Math.max(period, took) * this.throttle) / (100 - this.throttle) : 0);
    if (sleep >= 1) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, sleep);
        this.wakeSleep = () => (clearTimeout(t), r());
      });
      this.wakeSleep = null;
    } else await new Promise((r) => setImmediate(r)); // let control messages in between steps
    return true;
  }
}

async function main(init: WorkerInit): Promise<void> {
  // A destination started early has neither disk nor workload until 'load-device'.
  const backend = init.deferDevice ? null : await openBackend(init.disk, { lock: false, leaseToken: init.leaseToken });
  const guest = new GuestWorker(init, backend);
  port.on('message', async (req: WorkerRequest) => {
    try {
      const result = await guest.handle(req);
      send({ id: req.id, ok: true, result: req.cmd === 'device-state' ? result : guest.status() });
      if (req.cmd === 'stop') process.nextTick(() => process.exit(0));
    } catch (err) {
      send({ id: req.id, ok: false, error: errorOf(err) });
    }
  });
  send({ event: 'ready', diskSize: backend?.size ?? 0, diskDescription: backend?.description ?? init.disk });
  await guest.loop();
  // A failed guest stays alive to answer status and dump requests; a stopped one exits on 'stop'.
  await new Promise<void>(() => {});
}

/** The entry startTsWorker calls with the guest's WorkerInit. */
export default function run(init: WorkerInit): void {
  main(init).catch((err) => {
    send({ event: 'failed', error: errorOf(err) });
    process.exit(1);
  });
}
