import { BlockIndex } from './block-index.ts';

/**
 * The page-to-block map's hot path: typed arrays indexed by page, in
 * SharedArrayBuffers so the guest worker updates them and the engine reads them
 * without copies. No per-page objects. The worker also keeps a block→pages index
 * so a write to a block can drop every other page mapped to it.
 */

/** Per-page state. Only READ and WRITE_FLUSHED may be sent as references. */
export const P2B = {
  NONE: 0,
  READ: 1, // the page was read from the block and not written since
  WRITE_PENDING: 2, // the page was written to the block; the write is not yet flushed
  WRITE_FLUSHED: 3, // as above, and a flush completed after the write
  UNVERIFIED: 4, // reloaded from a database: must be checked before any use
} as const;
export type P2bState = (typeof P2B)[keyof typeof P2B];
export const NO_BLOCK = 0xffffffff;

/** Counters kept with the map (shared, so the engine and `p2b stats` see them). */
export const COUNTER = {
  mappedByRead: 0,
  mappedByWrite: 1,
  invalidatedByMemoryWrite: 2,
  invalidatedByBlockWrite: 3, // another page's write changed the block
  invalidatedByRemap: 4, // the page now holds another block
  flushedWrites: 5,
} as const;
export type CounterName = keyof typeof COUNTER;
const COUNTERS = Object.keys(COUNTER).length;

export interface SharedP2b {
  pages: number;
  block: SharedArrayBuffer;
  state: SharedArrayBuffer;
  changed: SharedArrayBuffer;
  counters: SharedArrayBuffer;
}

export class P2bMap {
  readonly block: Uint32Array;
  readonly state: Uint8Array;
  /** One bit per page whose entry changed since the persister last looked. */
  readonly changed: Int32Array;
  readonly counters: Float64Array;
  /** block → pages mapped to it; built lazily by the side that mutates (the guest worker). */
  private byBlock: BlockIndex | null = null;

  private constructor(readonly pages: number, s: SharedP2b) {
    this.block = new Uint32Array(s.block);
    this.state = new Uint8Array(s.state);
    this.changed = new Int32Array(s.changed);
    this.counters = new Float64Array(s.counters);
  }

  static allocate(pages: number): P2bMap {
    const m = new P2bMap(pages, {
      pages,
      block: new SharedArrayBuffer(pages * 4),
      state: new SharedArrayBuffer(pages),
      changed: new SharedArrayBuffer(Math.ceil(pages / 32) * 4),
      counters: new SharedArrayBuffer(COUNTERS * 8),
    });
    m.block.fill(NO_BLOCK);
    return m;
  }

  static fromShared(s: SharedP2b): P2bMap {
    return new P2bMap(s.pages, s);
  }

  shared(): SharedP2b {
    return {
      pages: this.pages,
      block: this.block.buffer as SharedArrayBuffer,
      state: this.state.buffer as SharedArrayBuffer,
      changed: this.changed.buffer as SharedArrayBuffer,
      counters: this.counters.buffer as SharedArrayBuffer,
    };
  }

  /** True when the page may be sent as a block reference now. */
  referenceable(page: number): boolean {
    const s = this.state[page];
    return s === P2B.READ || s === P2B.WRITE_FLUSHED;
  }

  count(name: CounterName): number {
    return this.counters[COUNTER[name]];
  }

  // ---- mutations (guest worker only) ----

  /** A completed read of `block` into `page`. */
  mapRead(page: number, block: number): void {
    this.set(page, block, P2B.READ);
    this.counters[COUNTER.mappedByRead]++;
  }

  /** A completed write of `page` to `block`: referenceable only after markFlushed. */
  mapWrite(page: number, block: number): void {
    this.set(page, block, P2B.WRITE_PENDING);
    this.counters[COUNTER.mappedByWrite]++;
  }

  /** A flush completed after this page's write. */
  markFlushed(page: number, block: number): void {
    if (this.state[page] !== P2B.WRITE_PENDING || this.block[page] !== block) return;
    this.state[page] = P2B.WRITE_FLUSHED;
    this.touch(page);
    this.counters[COUNTER.flushedWrites]++;
  }

  /** The page's content changed in memory. */
  invalidatePage(page: number): void {
    if (this.state[page] === P2B.NONE) return;
    this.unlink(page);
    this.counters[COUNTER.invalidatedByMemoryWrite]++;
  }

  /** The block's content is changing: no page may claim to equal it any more, except `keep`. */
  invalidateBlock(block: number, keep = -1): void {
    const idx = this.index();
    // A plain walk, no callback: this runs for every block of every guest write.
    for (let p = idx.first(block); p !== -1; ) {
      const next = idx.after(p);
      if (p !== keep) {
        this.unlink(p);
        this.counters[COUNTER.invalidatedByBlockWrite]++;
      }
      p = next;
    }
  }

  /** Loads an entry without counting it (restoring from a database). */
  restore(page: number, block: number, state: P2bState): void {
    this.set(page, block, state);
  }

  /**
   * Loads many entries into a map that has none (a destination's, at resume) without
   * touching this thread's block index, which is rebuilt from the arrays if ever
   * needed: 57 k indexed inserts cost ~35 ms of downtime.
   */
  restoreAll(entries: Iterable<[number, number]>, state: P2bState): void {
    for (let p = 0; p < this.pages; p++) if (this.state[p] !== P2B.NONE) throw new Error('restoreAll needs an empty map');
    for (const [page, block] of entries) {
      this.block[page] = block;
      this.state[page] = state;
      this.touch(page);
    }
    this.byBlock = null;
  }

  /** Pages currently mapped to a block (worker side). */
  pagesOf(block: number): number[] {
    const out: number[] = [];
    this.index().forEach(block, (p) => out.push(p));
    return out;
  }

  private set(page: number, block: number, state: P2bState): void {
    const old = this.block[page];
    if (this.state[page] !== P2B.NONE && old !== block) {
      this.removeFromIndex(old, page);
      this.counters[COUNTER.invalidatedByRemap]++;
    }
    if (this.state[page] === P2B.NONE || old !== block) this.addToIndex(block, page);
    this.block[page] = block;
    this.state[page] = state;
    this.touch(page);
  }

  private unlink(page: number): void {
    this.removeFromIndex(this.block[page], page);
    this.block[page] = NO_BLOCK;
    this.state[page] = P2B.NONE;
    this.touch(page);
  }

  private touch(page: number): void {
    Atomics.or(this.changed, page >>> 5, 1 << (page & 31));
  }

  private index(): BlockIndex {
    if (this.byBlock) return this.byBlock;
    this.byBlock = new BlockIndex(this.pages);
    for (let p = 0; p < this.pages; p++) if (this.state[p] !== P2B.NONE) this.byBlock.add(this.block[p], p);
    return this.byBlock;
  }

  private addToIndex(block: number, page: number): void {
    this.index().add(block, page);
  }

  private removeFromIndex(block: number, page: number): void {
    this.index().remove(block, page);
  }
}
