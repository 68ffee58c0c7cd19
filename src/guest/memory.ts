/**
 * Guest memory: regions of SharedArrayBuffer viewed by both the guest worker and
 * the engine. Every write goes through this class, which marks the dirty log and
 * tells the write hook (the interceptor drops the page's p2b mapping there).
 */
import { createHash, createHmac } from 'node:crypto';
import { PAGE_SIZE, PAGE_SHIFT, regionLayout, type RegionLayout } from './layout.ts';
import { DirtyLog } from './dirty-log.ts';

/** What crosses to a worker: the buffers, not copies. */
export interface SharedMemory {
  memoryBytes: number;
  regions: SharedArrayBuffer[];
  dirty: SharedArrayBuffer;
}

export class GuestMemory {
  readonly layout: RegionLayout[];
  readonly regions: Uint8Array[];
  readonly dirty: DirtyLog;
  readonly pages: number;
  /** Called after a page's content changed (set by the interceptor in the guest worker). */
  onWrite: ((page: number) => void) | null = null;

  private constructor(readonly memoryBytes: number, buffers: SharedArrayBuffer[], dirty: SharedArrayBuffer) {
    this.layout = regionLayout(memoryBytes);
    this.pages = memoryBytes / PAGE_SIZE;
    this.regions = buffers.map((b) => new Uint8Array(b));
    this.dirty = new DirtyLog(this.pages, dirty);
  }

  static allocate(memoryBytes: number): GuestMemory {
    const layout = regionLayout(memoryBytes);
    const buffers = layout.map((r) => new SharedArrayBuffer(r.pages * PAGE_SIZE));
    return new GuestMemory(memoryBytes, buffers, new DirtyLog(memoryBytes / PAGE_SIZE).buffer);
  }

  static fromShared(shared: SharedMemory): GuestMemory {
    return new GuestMemory(shared.memoryBytes, shared.regions, shared.dirty);
  }

  shared(): SharedMemory {
    return { memoryBytes: this.memoryBytes, regions: this.regions.map((r) => r.buffer as SharedArrayBuffer), dirty: this.dirty.buffer };
  }

  /**
   * Makes the kernel back every page now (one write each), as QEMU's -mem-prealloc:
   * first touches cost ~2.5 µs a page, which a destination would otherwise pay while
   * pages arrive. Only for memory nobody has written yet: it writes zeros.
   */
  faultIn(): void {
    for (const r of this.regions) for (let at = 0; at < r.length; at += PAGE_SIZE) r[at] = 0;
  }

  /** A view of one page. Read from it freely; write only through the methods below. */
  page(page: number): Uint8Array {
    const region = this.regions[page >>> 18]; // 2^18 pages per 1 GiB region
    const at = (page & 0x3ffff) << PAGE_SHIFT;
    return region.subarray(at, at + PAGE_SIZE);
  }

  /**
   * Copies a whole page in (a disk read landing, or a migrated page arriving).
   * The dirty log is always marked; `notify: false` skips the write hook for a
   * caller that updates the p2b map itself (the interceptor remaps in one step).
   */
  setPage(page: number, data: Uint8Array, notify = true): void {
    this.page(page).set(data.subarray(0, PAGE_SIZE));
    this.dirty.mark(page);
    if (notify) this.onWrite?.(page);
  }

  /** Writes bytes at an offset inside a page. */
  write(page: number, offset: number, data: Uint8Array): void {
    this.page(page).set(data, offset);
    this.touched(page);
  }

  /** Lets fn fill the page in place (e.g. a PRNG writing random data), then marks it written. */
  update(page: number, fn: (view: Uint8Array) => void): void {
    fn(this.page(page));
    this.touched(page);
  }

  zeroPage(page: number): void {
    this.page(page).fill(0);
    this.touched(page);
  }

  isZero(page: number): boolean {
    const v = this.page(page);
    // Integer words: a float view would call -0.0 (one set bit) zero.
    const words = new Uint32Array(v.buffer, v.byteOffset, PAGE_SIZE / 4);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
    return true;
  }

  /** Digest of one region: SHA-256, or HMAC-SHA-256 with a key (for cross-host checks). */
  regionDigest(index: number, key?: Buffer): string {
    const h = key ? createHmac('sha256', key) : createHash('sha256');
    const r = this.regions[index];
    for (let at = 0; at < r.length; at += 64 * 1024 * 1024) h.update(r.subarray(at, Math.min(r.length, at + 64 * 1024 * 1024)));
    return h.digest('hex');
  }

  private touched(page: number): void {
    this.dirty.mark(page);
    this.onWrite?.(page);
  }
}
