/**
 * The I/O interceptor: a filter over any block backend (nbdkit's filter idea)
 * that keeps the p2b map true. Rules (DESIGN.md, "Data flow", step 1):
 *  - a completed read of block b into page p maps p→b, unless a write to b
 *    overlapped the read (then the page may hold either version: not mapped);
 *  - a write of page p to block b drops every other page's mapping to b when it
 *    starts (the block is changing), and on completion maps p→b only if p was not
 *    changed in memory since its bytes were taken; such a mapping is referenceable
 *    only after a later flush completes;
 *  - a memory write to p drops p's mapping (GuestMemory.onWrite).
 * Block size equals page size (4 KiB).
 */
import { PAGE_SIZE } from '../guest/layout.ts';
import type { GuestMemory } from '../guest/memory.ts';
import type { P2bMap } from '../p2b/map.ts';
import type { BlockBackend } from './backend.ts';

interface IoInFlight {
  first: number;
  count: number;
  /** Blocks a write touched while this operation was in flight: their content is unknown to it. */
  tainted: Set<number> | null;
}

const overlaps = (op: IoInFlight, block: number) => block >= op.first && block < op.first + op.count;
const taint = (op: IoInFlight, block: number) => (op.tainted ??= new Set()).add(block);

export interface InterceptorStats {
  reads: number;
  writes: number;
  flushes: number;
  bytesRead: number;
  bytesWritten: number;
  readsRaced: number; // blocks left unmapped because a write overlapped their read
  writesRaced: number; // pages left unmapped because they changed during their write
}

export class Interceptor {
  /** Per page: bumped on every memory write, to detect a page changing under its own write. */
  private readonly generation: Uint32Array;
  private readonly reads = new Set<IoInFlight>();
  private readonly writes = new Set<IoInFlight>();
  /** Pages whose write completed since the last flush began: [page, block]. */
  private unflushed: [number, number][] = [];
  readonly stats: InterceptorStats = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0, readsRaced: 0, writesRaced: 0 };

  constructor(readonly backend: BlockBackend, readonly memory: GuestMemory, readonly map: P2bMap) {
    this.generation = new Uint32Array(memory.pages);
    memory.onWrite = (page) => {
      this.generation[page]++;
      map.invalidatePage(page);
    };
  }

  get blocks(): number {
    return Math.floor(this.backend.size / PAGE_SIZE);
  }

  /** Reads `pages.length` consecutive blocks starting at `first` into the given pages. */
  async readBlocks(first: number, pages: ArrayLike<number>): Promise<void> {
    const count = pages.length;
    this.checkRange(first, count);
    const op: IoInFlight = { first, count, tainted: null };
    for (const w of this.writes) for (let b = first; b < first + count; b++) if (overlaps(w, b)) taint(op, b);
    this.reads.add(op);
    const buf = Buffer.allocUnsafe(count * PAGE_SIZE);
    try {
      await this.backend.readInto(buf, first * PAGE_SIZE);
    } finally {
      this.reads.delete(op);
    }
    for (let i = 0; i < count; i++) {
      const page = pages[i];
      this.memory.setPage(page, buf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)); // drops the old mapping
      if (op.tainted?.has(first + i)) this.stats.readsRaced++;
      else this.map.mapRead(page, first + i);
    }
    this.stats.reads++;
    this.stats.bytesRead += buf.length;
  }

  /** Writes the given pages to `pages.length` consecutive blocks starting at `first`. */
  async writeBlocks(pages: ArrayLike<number>, first: number): Promise<void> {
    const count = pages.length;
    this.checkRange(first, count);
    const buf = Buffer.allocUnsafe(count * PAGE_SIZE);
    const gens = new Uint32Array(count);
    for (let i = 0; i < count; i++) {
      buf.set(this.memory.page(pages[i]), i * PAGE_SIZE);
      gens[i] = this.generation[pages[i]];
    }
    // Two writes to one block in flight together leave its content to the server's
    // ordering: neither may map. Reads in flight over the block may see either version.
    const op: IoInFlight = { first, count, tainted: null };
    for (let b = first; b < first + count; b++) {
      this.map.invalidateBlock(b);
      for (const w of this.writes) if (overlaps(w, b)) (taint(w, b), taint(op, b));
      for (const r of this.reads) if (overlaps(r, b)) taint(r, b);
    }
    this.writes.add(op);
    try {
      await this.backend.write(first * PAGE_SIZE, buf);
    } finally {
      this.writes.delete(op);
    }
    for (let i = 0; i < count; i++) {
      const page = pages[i];
      const block = first + i;
      if (this.generation[page] !== gens[i] || op.tainted?.has(block)) {
        this.stats.writesRaced++;
        this.map.invalidateBlock(block);
        continue;
      }
      this.map.invalidateBlock(block, page);
      this.map.mapWrite(page, block);
      this.unflushed.push([page, block]);
    }
    this.stats.writes++;
    this.stats.bytesWritten += buf.length;
  }

  /** Flushes the backend; writes completed before the flush began become referenceable. */
  async flush(): Promise<void> {
    const covered = this.unflushed;
    this.unflushed = [];
    try {
      await this.backend.flush();
    } catch (err) {
      this.unflushed = covered.concat(this.unflushed);
      throw err;
    }
    for (const [page, block] of covered) this.map.markFlushed(page, block);
    this.stats.flushes++;
  }

  /** True while disk I/O is in flight (a pause waits for none). */
  get busy(): boolean {
    return this.reads.size > 0 || this.writes.size > 0;
  }

  private checkRange(first: number, count: number): void {
    if (first < 0 || count <= 0 || (first + count) * PAGE_SIZE > this.backend.size) {
      throw new RangeError(`blocks [${first}, +${count}) are outside the disk (${this.blocks} blocks)`);
    }
  }
}
