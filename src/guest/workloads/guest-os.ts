/**
 * The little operating system every workload runs on: who owns each page (free,
 * page cache, anonymous), a page allocator that zeroes freed pages, and an LRU
 * page cache of disk extents (files, or single database blocks with a dirty flag).
 *
 * Determinism: every decision (allocation, eviction, which page gets what) is made
 * synchronously when an operation starts; awaits only wait for data. So the same
 * state and the same calls give the same memory, whatever the I/O timing. All of
 * it serializes into the device state, so a resumed guest continues exactly.
 */
import { PAGE_SIZE } from '../layout.ts';
import type { GuestMemory } from '../memory.ts';
import type { Interceptor } from '../../storage/interceptor.ts';
import type { Rng } from '../../util/rng.ts';

export const OWNER = { FREE: 0, CACHE: 1, ANON: 2 } as const;

export interface Extent {
  id: number;
  first: number; // first disk block
  pages: number[]; // guest pages holding blocks first..first+pages.length-1
  dirty: boolean; // changed in memory since it was read or written back
  /** Set while the extent's read is in flight; resolves when its pages hold the data. */
  loading: Promise<void> | null;
}

/** The guest OS's tables at a safe point, as arrays device-state.ts writes as they are. */
export interface GuestOsState {
  owner: Uint8Array; // the owner byte of each page
  free: Uint32Array; // the free-page stack, bottom first (its order decides future allocations)
  cache: Uint32Array; // LRU order, oldest first, per extent: id, first, dirty, n, n pages
  anon: Uint32Array; // the anonymous pages, in allocation order
}

export class GuestOs {
  readonly owner: Uint8Array;
  /** Extents by id, in LRU order (Map keeps insertion order; a touch re-inserts). */
  readonly cache = new Map<number, Extent>();
  readonly anon: number[] = [];
  private readonly free: Uint32Array;
  private freeCount = 0;
  /** Writebacks in flight by block: a read of that block waits for it, so it sees the new data. */
  private readonly writebacks = new Map<number, Promise<void>>();
  cachedPages = 0;
  /** Most pages the page cache may hold; beyond it the LRU extent is evicted first. */
  cacheCapacity: number;
  readonly stats = { cacheHits: 0, cacheMisses: 0, evictions: 0, writebacks: 0 };

  constructor(readonly memory: GuestMemory, readonly disk: Interceptor, saved?: GuestOsState) {
    this.owner = new Uint8Array(memory.pages);
    this.free = new Uint32Array(memory.pages);
    this.cacheCapacity = memory.pages;
    if (saved) this.restore(saved);
    // Highest page at the bottom, so allocation starts at page 0.
    else for (let p = memory.pages - 1; p >= 0; p--) this.free[this.freeCount++] = p;
  }

  private restore(saved: GuestOsState): void {
    this.owner.set(saved.owner);
    this.free.set(saved.free);
    this.freeCount = saved.free.length;
    const c = saved.cache;
    for (let i = 0; i < c.length; i += 4 + c[i + 3]) {
      const pages = Array.from(c.subarray(i + 4, i + 4 + c[i + 3]));
      this.cache.set(c[i], { id: c[i], first: c[i + 1], pages, dirty: c[i + 2] === 1, loading: null });
      this.cachedPages += pages.length;
    }
    for (let i = 0; i < saved.anon.length; i++) this.anon.push(saved.anon[i]); // a spread overflows the stack at 8 GiB
  }

  /** Consistent only at a safe point (no step running, drain() done). */
  state(): GuestOsState {
    let words = 0;
    for (const e of this.cache.values()) words += 4 + e.pages.length;
    const cache = new Uint32Array(words);
    let at = 0;
    for (const e of this.cache.values()) {
      cache.set([e.id, e.first, e.dirty ? 1 : 0, e.pages.length], at);
      cache.set(e.pages, at + 4);
      at += 4 + e.pages.length;
    }
    return { owner: this.owner.slice(), free: this.free.slice(0, this.freeCount), cache, anon: Uint32Array.from(this.anon) };
  }

  get freePages(): number {
    return this.freeCount;
  }

  /** Waits for every writeback in flight (the worker calls it after each step). */
  async drain(): Promise<void> {
    while (this.writebacks.size) await Promise.all(new Set(this.writebacks.values()));
  }

  /** Takes a free page, or evicts cache to make one; -1 when nothing can be freed. */
  private allocPage(kind: number): number {
    if (this.freeCount === 0 && !this.evictOne()) return -1;
    const p = this.free[--this.freeCount];
    this.owner[p] = kind;
    return p;
  }

  private freePage(page: number): void {
    this.owner[page] = OWNER.FREE;
    this.free[this.freeCount++] = page;
    this.memory.zeroPage(page); // free pages read as zero, as a guest kernel's do with init_on_free
  }

  /** Evicts the least recently used extent that is not loading; a dirty one is written back first. */
  private evictOne(): boolean {
    for (const e of this.cache.values()) {
      if (e.loading) continue;
      this.cache.delete(e.id);
      if (e.dirty) this.startWriteBack(e); // takes the bytes now; the pages can be freed at once
      for (const p of e.pages) this.freePage(p);
      this.cachedPages -= e.pages.length;
      this.stats.evictions++;
      return true;
    }
    return false;
  }

  private startWriteBack(e: Extent): Promise<void> {
    e.dirty = false;
    this.stats.writebacks++;
    const done = this.disk.writePages(e.pages, e.first); // copies the pages before its first await
    for (let i = 0; i < e.pages.length; i++) this.writebacks.set(e.first + i, done);
    const settle = () => {
      for (let i = 0; i < e.pages.length; i++) if (this.writebacks.get(e.first + i) === done) this.writebacks.delete(e.first + i);
    };
    void done.then(settle, settle);
    return done;
  }

  /** Reads an extent through the page cache: a hit only touches LRU order; a miss reads from disk. */
  async readExtent(id: number, first: number, count: number): Promise<Extent | null> {
    const hit = this.cache.get(id);
    if (hit) {
      this.cache.delete(id);
      this.cache.set(id, hit);
      this.stats.cacheHits++;
      if (hit.loading) await hit.loading;
      return hit;
    }
    this.stats.cacheMisses++;
    count = Math.min(count, this.cacheCapacity);
    while (this.cachedPages + count > this.cacheCapacity && this.evictOne());
    // Registered before any await: a concurrent reader of the same extent waits for this one.
    let loaded!: () => void;
    const extent: Extent = { id, first, pages: [], dirty: false, loading: new Promise<void>((r) => (loaded = r)) };
    this.cache.set(id, extent);
    for (let i = 0; i < count; i++) {
      const p = this.allocPage(OWNER.CACHE);
      if (p < 0) break;
      extent.pages.push(p);
      this.cachedPages++;
    }
    try {
      if (extent.pages.length === 0) {
        this.cache.delete(id);
        return null;
      }
      const pending = extent.pages.map((_, i) => this.writebacks.get(first + i)).filter((w) => w !== undefined);
      if (pending.length) await Promise.allSettled(pending);
      await this.disk.readPages(extent.pages, first);
      return extent;
    } finally {
      extent.loading = null;
      loaded();
    }
  }

  /** Writes a cached extent back to its blocks (it stays cached, now clean). */
  async writeBack(extent: Extent): Promise<void> {
    if (!extent.dirty || extent.loading) return;
    await this.startWriteBack(extent);
  }

  /** Allocates an anonymous page and fills it; -1 when memory is exhausted. */
  allocAnon(fill: (view: Uint8Array) => void): number {
    const p = this.allocPage(OWNER.ANON);
    if (p < 0) return -1;
    this.anon.push(p);
    this.memory.update(p, fill);
    return p;
  }

  /** Rewrites an anonymous page in place. */
  rewriteAnon(page: number, fill: (view: Uint8Array) => void): void {
    this.memory.update(page, fill);
  }
}

/** Fills a page the way heap memory looks: random words, or text-like bytes that compress. */
export function anonFill(rng: Rng, compressible = false): (view: Uint8Array) => void {
  if (!compressible) return (view) => rng.fill(view);
  const base = rng.u32(); // drawn now, not when the page is filled
  return (view) => {
    for (let i = 0; i < PAGE_SIZE; i += 4) {
      const v = (base + ((i * 2654435761) % 97)) >>> 0;
      view[i] = 97 + (v % 26);
      view[i + 1] = 32;
      view[i + 2] = 97 + ((v >>> 8) % 26);
      view[i + 3] = (i & 63) === 0 ? 10 : 32;
    }
  };
}
