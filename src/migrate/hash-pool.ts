/**
 * Keyed hashing on worker threads (hash-worker.mjs). At about 5 µs per 4 KiB page,
 * hashing on the event loop capped the fetch queue near 150 MB/s and slowed the
 * source's rounds; the pool keeps the loop free for I/O and uses the other cores.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { SharedMemory } from '../guest/memory.ts';
import { PAGE_SIZE, REGION_SHIFT, HMAC_ALGORITHM } from '../wire/index.ts';

/** What the plain-JS worker must agree on with the protocol. */
const PROTOCOL = { pageSize: PAGE_SIZE, regionShift: REGION_SHIFT, algorithm: HMAC_ALGORITHM };

export class HashPool {
  private readonly workers: Worker[];
  private next = 0;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (m: { hashes: Uint8Array; buffer?: ArrayBuffer }) => void; reject: (e: Error) => void }>();
  /** Resolves once every thread has loaded its module (or ended): a pool booted ahead is then idle, not booting. */
  readonly booted: Promise<void>;

  /** `key` may be null and given later with setKey: a pool can boot before its migration. */
  constructor(key: Buffer | null, memory?: SharedMemory, readonly size = Math.min(4, Math.max(2, os.availableParallelism() - 1))) {
    this.workers = Array.from({ length: size }, () => {
      const w = new Worker(new URL('./hash-worker.mjs', import.meta.url), { workerData: { key: key?.toString('hex'), memory, protocol: PROTOCOL } });
      w.on('message', (m: { id: number; hashes: Uint8Array; buffer?: ArrayBuffer; ready?: true }) => {
        if (m.ready) return void w.emit('loaded');
        const done = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        if (this.waiting.size === 0) for (const x of this.workers) x.unref();
        done?.resolve(m);
      });
      // A worker that dies or is closed fails every job waiting on the pool, rather than leaving them hanging.
      const fail = (e: Error) => {
        for (const job of this.waiting.values()) job.reject(e);
        this.waiting.clear();
      };
      w.on('error', fail);
      w.on('exit', (code) => this.waiting.size && fail(new Error(`a hashing thread exited (code ${code})`)));
      w.unref(); // an idle pool keeps nothing alive; a pending job does
      return w;
    });
    this.booted = Promise.all(this.workers.map((w) => new Promise<void>((r) => (w.once('loaded', () => r()), w.once('exit', () => r()))))).then(() => {});
  }

  /** The key for every job from now on (messages to a worker keep their order). */
  setKey(key: Buffer): void {
    for (const w of this.workers) w.postMessage({ key: key.toString('hex') });
  }

  private submit(job: object, transfer: ArrayBuffer[]): Promise<{ hashes: Uint8Array; buffer?: ArrayBuffer }> {
    const id = this.nextId++;
    const w = this.workers[this.next++ % this.workers.length];
    if (this.waiting.size === 0) for (const x of this.workers) x.ref();
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      w.postMessage({ ...job, id }, transfer);
    });
  }

  /**
   * Keyed hashes of ranges of pages in a buffer it owns (moved to a worker and back),
   * `ranges` holding [firstPage, count] pairs. Returns the buffer and 16 bytes per range.
   * `ownsArrayBuffer`: all of buf's ArrayBuffer is the caller's (a BufferPool buffer).
   */
  async hashBuffer(buf: Buffer, ranges: Uint32Array, ownsArrayBuffer = false): Promise<{ buffer: Buffer; hashes: Uint8Array }> {
    // The ArrayBuffer moves whole when the caller owns all of it (never Node's shared small-buffer
    // pool, which a view at offset 0 may also be); otherwise the view is copied once.
    const movable = buf.byteOffset === 0 && (ownsArrayBuffer || buf.buffer.byteLength === buf.length);
    const own = movable ? (buf.buffer as ArrayBuffer) : Uint8Array.prototype.slice.call(buf).buffer;
    const length = buf.length; // moving the ArrayBuffer empties every view of it, buf included
    const r = await this.submit({ buffer: own, ranges, bytes: 16 }, [own]);
    return { buffer: Buffer.from(r.buffer!, 0, length), hashes: r.hashes };
  }

  /**
   * Keyed hashes of ranges of the guest memory the pool was created with, read in place;
   * `ranges` holds [firstPage, count] pairs, none across a region. 16 bytes per range
   * (page references) or 32 (memory digests).
   */
  async hashMemory(ranges: Uint32Array, bytes: 16 | 32 = 16): Promise<Uint8Array> {
    return (await this.submit({ ranges, bytes }, [])).hashes;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
