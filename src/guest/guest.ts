/**
 * A running emulated guest, seen from the engine's thread: memory and p2b map in
 * shared buffers, the workload in a worker, the map persisted to SQLite beside it.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, existsSync, openSync, writeSync, closeSync, fsyncSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import type { Worker } from 'node:worker_threads';
import { GuestMemory } from './memory.ts';
import { PAGE_SIZE } from './layout.ts';
import { P2bMap, P2B } from '../p2b/map.ts';
import { P2bStore } from '../p2b/store.ts';
import { P2bPersister } from '../p2b/persister.ts';
import { startTsWorker, spareTsWorker } from '../util/ts-worker.ts';
import { DiskLock } from '../storage/disk-lock.ts';
import { heapOptionsProblem } from './workloads/heap.ts';
import { WORKLOADS } from './workloads/registry.ts';
import type { WorkloadOptions } from './workloads/workload.ts';
import { decodeDeviceState } from './device-state.ts';
import type { DeviceState, WorkerInit, WorkerReply, WorkerEvent, WorkerRequest, WorkerStatus } from './messages.ts';
import { fingerprint, type Fingerprint } from './fingerprint.ts';
import { LivemigError, codeOf, type ErrorCode } from '../errors.ts';

const WORKER = new URL('./worker.ts', import.meta.url);


export interface GuestConfig {
  name: string;
  memoryBytes: number;
  disk: string;
  workload: string;
  options: WorkloadOptions;
  stateDir: string;
  startPaused?: boolean;
  device?: DeviceState;
  /** Memory and map that already hold the guest (a migration's destination); allocated if absent. */
  memory?: GuestMemory;
  map?: P2bMap;
  /** Start from a fresh map database even if the state dir has one (a migrated guest's map came with it). */
  freshMap?: boolean;
  /** Start the worker now, paused, without disk or workload: loadDevice() brings both (a destination). */
  deferDevice?: boolean;
  /** A worker booted ahead (Guest.spareWorker) to run this guest: saves its boot time now. */
  spareWorker?: Worker;
}

export interface GuestStatus {
  name: string;
  /** 'postmigrate': it has migrated away and stays here paused, memory intact, until stopped (as QEMU's). */
  state: WorkerStatus['state'] | 'postmigrate';
  memoryBytes: number;
  regions: number;
  workload: string;
  throttle: number;
  steps: number;
  progress: Record<string, unknown>;
  disk: WorkerStatus['disk'];
  dirtyPages: number;
  p2b: { path: string; pages: number; mappedPages: number; referenceablePages: number; reloadedUnverified: number; previousRunCrashed: boolean; setAside?: string; writeError?: string };
  error?: { code: string; message: string };
}

type Request = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

interface MapStore {
  store: P2bStore;
  dbPath: string;
  reloaded: number;
  previousRunCrashed: boolean;
  setAside: string | null;
}

/** What an unreadable map database throws: it is set aside, never trusted, never fatal (the map is a cache). */
const UNREADABLE_MAP = new Set(['SQLITE_CORRUPT', 'SQLITE_NOTADB', 'P2B_FOREIGN_FILE', 'P2B_SCHEMA_VERSION']);

/** Moves an unreadable map database (and its WAL) out of the way, to `p2b.sqlite.unreadable` for inspection. */
function setMapAside(dbPath: string): string {
  const aside = `${dbPath}.unreadable`;
  renameSync(dbPath, aside);
  for (const ext of ['-wal', '-shm']) rmSync(dbPath + ext, { force: true });
  return aside;
}

const unreadable = (err: unknown) => UNREADABLE_MAP.has(codeOf(err) ?? '');

/** A map left by an earlier run of this guest, reloaded as UNVERIFIED: nothing proves those pages still match. */
function reloadMap(dbPath: string, config: GuestConfig, memory: GuestMemory, map: P2bMap): Omit<MapStore, 'dbPath' | 'setAside'> | null {
  const old = P2bStore.open(dbPath);
  try {
    const meta = old.meta();
    if (meta.pages === memory.pages && meta.guest === config.name) {
      return { store: old, reloaded: old.loadUnverified(map), previousRunCrashed: !meta.clean };
    }
  } catch (err) {
    old.close();
    for (let p = 0; p < map.pages; p++) map.invalidatePage(p); // whatever loaded before the damage showed
    throw err;
  }
  old.close();
  return null;
}

/**
 * The guest's map database in its state dir. One that cannot be read (corrupt,
 * foreign, another schema) is set aside and the guest starts with an empty map:
 * the map is a cache, never trusted unverified. One that cannot be written (disk
 * full) fails the start with P2B_WRITE.
 */
function openMapStore(config: GuestConfig, memory: GuestMemory, map: P2bMap): MapStore {
  mkdirSync(config.stateDir, { recursive: true });
  const dbPath = join(config.stateDir, 'p2b.sqlite');
  let setAside: string | null = null;
  if (existsSync(dbPath) && !config.freshMap) {
    try {
      const r = reloadMap(dbPath, config, memory, map);
      if (r) return { ...r, dbPath, setAside };
    } catch (err) {
      if (!unreadable(err)) throw err;
      setAside = setMapAside(dbPath);
    }
  }
  const meta = { guest: config.name, pages: memory.pages, pageSize: PAGE_SIZE, regions: memory.layout, storage: config.disk, storageSize: 0 };
  for (;;) {
    try {
      return { store: P2bStore.create(dbPath, meta), dbPath, reloaded: 0, previousRunCrashed: false, setAside };
    } catch (err) {
      if (unreadable(err) && !setAside) {
        setAside = setMapAside(dbPath); // a fresh map over an unreadable file
        continue;
      }
      throw new LivemigError('P2B_WRITE', `cannot create the p2b map database ${dbPath}: ${(err as Error).message}`, { cause: err });
    }
  }
}

export class Guest {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private exited = false;
  private migratedAway = false;
  private diskDetached = false;
  failure: { code: string; message: string } | null = null;

  private constructor(
    readonly config: GuestConfig,
    readonly memory: GuestMemory,
    readonly map: P2bMap,
    readonly persister: P2bPersister,
    private readonly worker: Worker,
    readonly dbPath: string,
    private readonly reloaded: number,
    private readonly previousRunCrashed: boolean,
    private diskLock: DiskLock | null,
    /** The token this guest's disk connection holds the disk's lease with, where the storage grants leases. */
    readonly leaseToken: string,
    /** Where an unreadable map database left by an earlier run was moved, if one was. */
    private readonly setAside: string | null = null,
  ) {
    worker.on('message', (m: WorkerReply | WorkerEvent) => {
      if ('event' in m) {
        if (m.event === 'failed') this.failure = m.error;
        return;
      }
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new LivemigError(m.error.code as ErrorCode, m.error.message));
    });
    worker.on('exit', () => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(new LivemigError('GUEST_EXITED', 'the guest worker exited'));
      this.pending.clear();
    });
  }

  /** Boots a guest worker ahead of need (about 300 ms of CPU) for a later start(). Terminate it if unused. */
  static spareWorker(): Worker {
    return spareTsWorker(WORKER);
  }

  static async start(config: GuestConfig): Promise<Guest> {
    const spec = WORKLOADS[config.workload];
    if (!spec) throw new LivemigError('GUEST_CONFIG', `unknown workload ${JSON.stringify(config.workload)} (have: ${Object.keys(WORKLOADS).join(', ')})`);
    const heapProblem = heapOptionsProblem(config.options.heap, config.options.writeSize);
    if (heapProblem) throw new LivemigError('GUEST_CONFIG', heapProblem);
    // The disk's lock is this process's (a deferred destination takes it when the disk is handed over).
    const diskLock = config.deferDevice ? null : await DiskLock.take(config.disk);
    const memory = config.memory ?? GuestMemory.allocate(config.memoryBytes);
    const map = config.map ?? P2bMap.allocate(memory.pages);
    let opened: MapStore;
    try {
      opened = openMapStore(config, memory, map);
    } catch (err) {
      await diskLock?.release(); // a guest that never started holds nothing
      throw err;
    }
    const { store, dbPath, reloaded, previousRunCrashed, setAside } = opened;
    const persister = new P2bPersister(map, store);
    persister.start();

    const leaseToken = randomUUID(); // one per guest instance: a copy of it elsewhere has its own
    const init: WorkerInit = {
      memory: memory.shared(),
      p2b: map.shared(),
      disk: config.disk,
      leaseToken,
      workload: config.workload,
      options: config.options,
      device: config.device,
      startPaused: config.startPaused,
      deferDevice: config.deferDevice,
    };
    const worker = startTsWorker(WORKER, init, config.spareWorker);
    const { spareWorker: _, memory: __, map: ___, ...kept } = config; // config stays plain data
    const guest = new Guest(kept, memory, map, persister, worker, dbPath, reloaded, previousRunCrashed, diskLock, leaseToken, setAside);
    const ready = await Promise.race([
      once(worker, 'message').then(([m]) => m as WorkerEvent),
      once(worker, 'error').then(([e]) => ({ event: 'failed', error: { code: 'GUEST_START', message: (e as Error).message } }) as WorkerEvent),
    ]);
    if (ready.event !== 'ready') {
      await worker.terminate();
      persister.close();
      await diskLock?.release();
      throw new LivemigError(ready.error.code as ErrorCode, `guest ${config.name} could not start: ${ready.error.message}`);
    }
    persister.tryWrite(() => store.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('storage', ?), ('storageSize', ?)").run(
      JSON.stringify(ready.diskDescription),
      JSON.stringify(ready.diskSize),
    ));
    return guest;
  }

  private request<T>(req: Request): Promise<T> {
    if (this.exited) return Promise.reject(new LivemigError('GUEST_EXITED', 'the guest worker has exited'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...req, id });
    });
  }

  /** Pauses at a safe point (disk flushed), then writes the map to its database. */
  async pause(): Promise<GuestStatus> {
    await this.request<WorkerStatus>({ cmd: 'pause' });
    this.persister.flush();
    return this.status();
  }

  /** Resumes a paused guest; a disk it handed over for a migration that failed is taken back first. */
  async resume(): Promise<GuestStatus> {
    if (this.migratedAway) throw new LivemigError('GUEST_MIGRATED', 'this guest has migrated away and runs on the destination: stop it here');
    if (this.diskDetached) await this.attachDisk();
    await this.request<WorkerStatus>({ cmd: 'resume' });
    return this.status();
  }

  async throttle(percent: number): Promise<GuestStatus> {
    await this.request<WorkerStatus>({ cmd: 'throttle', percent });
    return this.status();
  }

  /** Runs exactly `count` workload steps on a paused guest (for determinism checks). */
  async step(count: number): Promise<GuestStatus> {
    await this.request<WorkerStatus>({ cmd: 'step', count });
    this.persister.flush();
    return this.status();
  }

  /** Releases the disk (lock, connection) of a paused guest, for the destination to take. */
  async detachDisk(): Promise<void> {
    await this.request({ cmd: 'detach-disk' });
    await this.diskLock?.release();
    this.diskLock = null;
    this.diskDetached = true;
  }

  /** Takes the disk back (its lock first: a file another host holds now is refused, GUEST_DISK_LOCKED). */
  async attachDisk(): Promise<void> {
    this.diskLock ??= await DiskLock.take(this.config.disk);
    await this.request({ cmd: 'attach-disk' });
    this.diskDetached = false;
  }

  /** Gives a guest started with deferDevice its device state (as deviceStateBytes made it) and disk; it stays paused. */
  async loadDevice(bytes: Buffer): Promise<void> {
    const device = decodeDeviceState(bytes, this.memory.pages);
    this.diskLock ??= await DiskLock.take(this.config.disk);
    await this.request({ cmd: 'load-device', device });
  }

  /** The guest runs elsewhere now: it stays here paused, memory intact, disk released, until stopped. */
  markMigrated(): void {
    this.migratedAway = true;
  }

  /** The oracle's fingerprint of memory (fingerprint.ts); only of a guest that is not running. */
  async fingerprint(): Promise<Fingerprint> {
    const w = await this.request<WorkerStatus>({ cmd: 'status' });
    if (w.state === 'running') throw new LivemigError('GUEST_RUNNING', 'a fingerprint needs a guest that is not running: pause it first');
    return fingerprint(this.memory);
  }

  /** The device state of a paused guest, as bytes another host's loadDevice takes. */
  async deviceStateBytes(): Promise<Buffer> {
    const b = await this.request<Uint8Array>({ cmd: 'device-state' }); // device-state.ts's bytes
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  }

  async status(): Promise<GuestStatus> {
    const w = await this.request<WorkerStatus>({ cmd: 'status' });
    let mapped = 0;
    let referenceable = 0;
    const st = this.map.state;
    for (let p = 0; p < st.length; p++) {
      if (st[p] !== P2B.NONE) mapped++;
      if (st[p] === P2B.READ || st[p] === P2B.WRITE_FLUSHED) referenceable++;
    }
    return {
      name: this.config.name,
      state: this.migratedAway ? 'postmigrate' : w.state,
      memoryBytes: this.config.memoryBytes,
      regions: this.memory.layout.length,
      workload: this.config.workload,
      throttle: w.throttle,
      steps: w.steps,
      progress: w.workload,
      disk: w.disk,
      dirtyPages: this.memory.dirty.count(),
      p2b: {
        path: this.dbPath,
        pages: this.memory.pages,
        mappedPages: mapped,
        referenceablePages: referenceable,
        reloadedUnverified: this.reloaded,
        previousRunCrashed: this.previousRunCrashed,
        ...(this.setAside ? { setAside: this.setAside } : {}),
        ...(this.persister.failure ? { writeError: this.persister.failure.message } : {}),
      },
      ...(w.error ? { error: w.error } : {}),
    };
  }

  /**
   * Writes guest memory to a raw image (regions back to back) and, beside it, a
   * snapshot of the p2b map (`PATH.p2b.sqlite`). A running guest is paused for the
   * copy and resumed after, so image and snapshot describe the same instant and
   * `p2b verify SNAPSHOT --memory PATH` holds while the guest runs on.
   */
  async dumpMemory(path: string): Promise<{ path: string; bytes: number; map: string }> {
    const map = `${path}.p2b.sqlite`;
    const wasRunning = (await this.request<WorkerStatus>({ cmd: 'status' })).state === 'running';
    if (wasRunning) await this.pause();
    else this.persister.flush();
    try {
      const fd = openSync(path, 'w');
      try {
        for (const r of this.memory.regions) for (let at = 0; at < r.length; at += 64 << 20) writeSync(fd, r, at, Math.min(64 << 20, r.length - at));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      this.persister.store.snapshot(map);
    } finally {
      if (wasRunning) await this.resume();
    }
    return { path, bytes: this.config.memoryBytes, map };
  }

  private stopping: Promise<void> | null = null;

  /** Stops the workload at a safe point, flushes the map, marks it clean and closes it. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (!this.exited) {
        const exit = once(this.worker, 'exit');
        await this.request({ cmd: 'stop' }).catch(() => {});
        if (!this.exited) await exit;
      }
      this.persister.close();
      await this.diskLock?.release();
      this.diskLock = null;
    })();
    return this.stopping;
  }
}
