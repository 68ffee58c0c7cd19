/**
 * Keyed page hashing on worker threads. At about 5 µs per 4 KiB page, hashing on
 * the event loop capped the fetch queue near 150 MB/s and slowed the source's
 * rounds; the pool keeps the loop free for I/O and uses the other cores.
 */
import os from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startTsWorker } from '../util/ts-worker.ts';
import type { SharedMemory } from '../guest/memory.ts';

export class HashPool {
  private readonly workers: Worker[];
  private next = 0;
  private nextId = 1;
  private readonly waiting = new Map<number, (m: { hashes: Uint8Array; buffer?: ArrayBuffer }) => void>();

  constructor(key: Buffer, memory?: SharedMemory, size = Math.min(4, Math.max(2, os.availableParallelism() - 1))) {
    this.workers = Array.from({ length: size }, () => {
      const w = startTsWorker(new URL('./hash-worker.ts', import.meta.url), { key: key.toString('hex'), memory });
      w.on('message', (m: { id: number; hashes: Uint8Array; buffer?: ArrayBuffer }) => {
        const done = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        done?.(m);
      });
      w.unref();
      return w;
    });
  }

  private submit(job: object, transfer: ArrayBuffer[]): Promise<{ hashes: Uint8Array; buffer?: ArrayBuffer }> {
    const id = this.nextId++;
    const w = this.workers[this.next++ % this.workers.length];
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      w.postMessage({ ...job, id }, transfer);
    });
  }

  /** Hashes the pages of a buffer it owns (moved to the worker and back). Returns the buffer and hashes. */
  async hashBuffer(buf: Buffer, count: number): Promise<{ buffer: Buffer; hashes: Uint8Array }> {
    // Only a buffer that owns its whole ArrayBuffer can be moved; others are copied once.
    const own = buf.byteOffset === 0 && buf.buffer.byteLength === buf.length ? (buf.buffer as ArrayBuffer) : Uint8Array.prototype.slice.call(buf).buffer;
    const r = await this.submit({ buffer: own, count }, [own]);
    return { buffer: Buffer.from(r.buffer!), hashes: r.hashes };
  }

  /** Hashes pages of the guest memory the pool was created with, read in place. */
  async hashPages(pages: number[]): Promise<Uint8Array> {
    const list = Uint32Array.from(pages);
    return (await this.submit({ pages: list }, [list.buffer as ArrayBuffer])).hashes;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
