/**
 * The I/O interceptor: a filter over any block backend (nbdkit's filter idea)
 * that keeps the p2b map true. It is itself a BlockBackend (plain byte reads and
 * writes pass through, writes dropping the mappings of the blocks they touch),
 * and adds the guest's page I/O, in the same argument order: pages, then the
 * first block. Rules (docs/architecture.md, "The p2b map"):
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

/** Marks, in both operations, the blocks where their ranges overlap (checked once per pair). */
function taintOverlap(a: IoInFlight, b: IoInFlight, both: boolean): void {
  const from = Math.max(a.first, b.first);
  const to = Math.min(a.first + a.count, b.first + b.count);
  for (let blk = from; blk < to; blk++) {
    (a.tainted ??= new Set()).add(blk);
    if (both) (b.tainted ??= new Set()).add(blk);
  }
}

export interface InterceptorStats {
  reads: number;
  writes: number;
  flushes: number;
  bytesRead: number;
  bytesWritten: number;
  readsRaced: number; // blocks left unmapped because a write overlapped their read
  writesRaced: number; // pages left unmapped because they changed during their write
}

export class Interceptor implements BlockBackend {
  /** Per page: bumped on every memory write, to detect a page changing under its own write. */
  private readonly generation: Uint32Array;
  private readonly reads = new Set<IoInFlight>();
  private readonly writes = new Set<IoInFlight>();
  /** Pages whose write completed since the last flush began, and their blocks (flat, no tuples). */
  private unflushedPages: number[] = [];
  private unflushedBlocks: number[] = [];
  readonly stats: InterceptorStats = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0, readsRaced: 0, writesRaced: 0 };

  constructor(public backend: BlockBackend, readonly memory: GuestMemory, readonly map: P2bMap) {
    this.generation = new Uint32Array(memory.pages);
    memory.onWrite = (page) => {
      this.generation[page]++;
      map.invalidatePage(page);
    };
  }

  get blocks(): number {
    return Math.floor(this.backend.size / PAGE_SIZE);
  }

  get size(): number {
    return this.backend.size;
  }

  get readOnly(): boolean {
    return this.backend.readOnly;
  }

  get description(): string {
    return this.backend.description;
  }

  /** Bytes read not into guest pages: nothing to map, but a write racing it still counts. */
  readInto(target: Uint8Array, offset: number): Promise<void> {
    return this.backend.readInto(target, offset);
  }

  /** Bytes written from outside guest pages: every block they touch loses its mappings. */
  async write(data: Uint8Array, offset: number): Promise<void> {
    const first = Math.floor(offset / PAGE_SIZE);
    const op: IoInFlight = { first, count: Math.ceil((offset + data.length) / PAGE_SIZE) - first, tainted: null };
    for (let b = op.first; b < op.first + op.count; b++) this.map.invalidateBlock(b);
    for (const r of this.reads) taintOverlap(r, op, false);
    for (const w of this.writes) taintOverlap(op, w, true);
    this.writes.add(op);
    try {
      await this.backend.write(data, offset);
    } finally {
      this.writes.delete(op);
    }
    this.stats.writes++;
    this.stats.bytesWritten += data.length;
  }

  close(): Promise<void> {
    return this.backend.close();
  }

  /** Reads `pages.length` consecutive blocks starting at `first` into the given pages. */
  async readPages(pages: ArrayLike<number>, first: number): Promise<void> {
    const count = pages.length;
    this.checkRange(first, count);
    const op: IoInFlight = { first, count, tainted: null };
    for (const w of this.writes) taintOverlap(op, w, false);
    this.reads.add(op);
    const buf = Buffer.allocUnsafe(count * PAGE_SIZE);
    try {
      await this.backend.readInto(buf, first * PAGE_SIZE);
    } finally {
      this.reads.delete(op);
    }
    for (let i = 0; i < count; i++) {
      const page = pages[i];
      // The page changes: bump its generation, then remap it in one step (or drop it if the read raced).
      this.memory.setPage(page, buf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), false);
      this.generation[page]++;
      if (op.tainted?.has(first + i)) {
        this.stats.readsRaced++;
        this.map.invalidatePage(page);
      } else this.map.mapRead(page, first + i);
    }
    this.stats.reads++;
    this.stats.bytesRead += buf.length;
  }

  /** Writes the given pages to `pages.length` consecutive blocks starting at `first`. */
  async writePages(pages: ArrayLike<number>, first: number): Promise<void> {
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
    for (let b = first; b < first + count; b++) this.map.invalidateBlock(b);
    for (const w of this.writes) taintOverlap(op, w, true);
    for (const r of this.reads) taintOverlap(r, op, false);
    this.writes.add(op);
    try {
      await this.backend.write(buf, first * PAGE_SIZE);
    } finally {
      this.writes.delete(op);
    }
    for (let i = 0; i < count; i++) {
      const page = pages[i];
      const block = first + i;
      if (this.generation[page] !== gens[i] || op.tainted?.has(block)) {
        this.stats.writesRaced++;
        continue;
      }
      // No page can have been mapped to this block since the write began (its other
      // mappings were dropped then; reads and writes overlapping it are tainted), so
      // mapping the written page needs no second invalidation.
      this.map.mapWrite(page, block);
      this.unflushedPages.push(page);
      this.unflushedBlocks.push(block);
    }
    this.stats.writes++;
    this.stats.bytesWritten += buf.length;
  }

  /** Flushes the backend; writes completed before the flush began become referenceable. */
  async flush(): Promise<void> {
    const pages = this.unflushedPages;
    const blocks = this.unflushedBlocks;
    this.unflushedPages = [];
    this.unflushedBlocks = [];
    try {
      await this.backend.flush();
    } catch (err) {
      this.unflushedPages = pages.concat(this.unflushedPages);
      this.unflushedBlocks = blocks.concat(this.unflushedBlocks);
      throw err;
    }
    for (let i = 0; i < pages.length; i++) this.map.markFlushed(pages[i], blocks[i]);
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
