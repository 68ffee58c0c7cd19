/**
 * The destination's fetch queue (DESIGN.md, step 3): block references wait here
 * while the migration goes on; they are sorted by block and coalesced into large
 * reads of adjacent blocks (at most `maxBlocks` per read), with up to
 * `maxInFlight` reads outstanding. Each block read is checked against the keyed
 * hash its reference carries and applied only if no newer version of the page
 * arrived meanwhile (sequence numbers); a mismatch asks the source for the page.
 */
import { PAGE_SIZE } from '../guest/layout.ts';
import type { GuestMemory } from '../guest/memory.ts';
import type { BlockBackend } from '../storage/backend.ts';
import { HASH_BYTES } from '../wire/frames.ts';
import type { HashPool } from './hash-pool.ts';

interface Ref {
  page: number;
  block: number;
  hash: Uint8Array;
  seq: number;
}

export interface FetchStats {
  refs: number;
  applied: number;
  stale: number; // a newer version of the page arrived before the block did
  mismatched: number;
  reads: number;
  bytesRead: number;
  maxInFlight: number;
  totalLatencyMs: number;
  /** Time with at least one read outstanding: storage throughput is bytesRead over this. */
  busyMs: number;
}

export class FetchQueue {
  /** Arrivals since the last pump, unsorted. */
  private incoming: Ref[] = [];
  /** Waiting references sorted by block; pending[head..] are still to read. */
  private pending: Ref[] = [];
  private head = 0;
  private inFlight = 0;
  private timer: NodeJS.Timeout | null = null;
  private idleWaiters: (() => void)[] = [];
  private failure: Error | null = null;
  readonly stats: FetchStats = { refs: 0, applied: 0, stale: 0, mismatched: 0, reads: 0, bytesRead: 0, maxInFlight: 0, totalLatencyMs: 0, busyMs: 0 };
  private busySince = 0;
  /** Pages applied from a reference, with their blocks: where the destination's p2b map starts. */
  readonly appliedBlock: Map<number, number> = new Map();

  constructor(
    private readonly storage: BlockBackend,
    private readonly hasher: HashPool,
    private readonly memory: GuestMemory,
    private readonly lastSeq: Uint32Array,
    private readonly onMismatch: (pages: number[]) => void,
    private readonly opts = { maxInFlight: 16, maxBlocks: 256, batch: 1024 },
  ) {}

  add(page: number, block: number, hash: Uint8Array, seq: number): void {
    if (this.failure) return; // the destination reports the failure (see `error`); nothing more is read
    this.incoming.push({ page, block, hash: Buffer.from(hash), seq });
    this.stats.refs++;
    // Enough for a good sort: go now; otherwise soon, so the queue never idles behind the link.
    if (this.incoming.length >= this.opts.batch) this.pump();
    else this.timer ??= setTimeout(() => ((this.timer = null), this.pump()), 2);
  }

  /** The storage error that stopped the queue, if any. */
  get error(): Error | null {
    return this.failure;
  }

  get idle(): boolean {
    return this.incoming.length === 0 && this.head === this.pending.length && this.inFlight === 0;
  }

  /** References waiting for a read (not yet issued). */
  get backlog(): number {
    return this.incoming.length + this.pending.length - this.head;
  }

  /** Resolves when every reference so far is resolved; rejects if the storage failed. */
  async drain(): Promise<void> {
    this.pump();
    while (!this.idle) {
      if (this.failure) throw this.failure;
      await new Promise<void>((r) => this.idleWaiters.push(r));
    }
    if (this.failure) throw this.failure;
  }

  /**
   * Merges new arrivals (sorted as a batch) into the sorted pending list, dropping
   * references a newer page version has overtaken, then issues runs of adjacent
   * blocks from the front. Re-sorting everything on every completion was the
   * queue's bottleneck: this keeps each pump linear in what it touches.
   */
  private pump(): void {
    if (this.failure) return this.wake();
    // Merging copies the whole pending list: do it when the list runs dry or when arrivals are a
    // fair share of it, not on every completion (that cost ~150 ms of a 256 MiB migration).
    const waiting = this.pending.length - this.head;
    if (this.incoming.length && (waiting < this.opts.maxBlocks || this.incoming.length >= waiting >> 2)) this.merge();
    while (this.inFlight < this.opts.maxInFlight && this.head < this.pending.length) {
      // One run: consecutive blocks, at most maxBlocks (a block referenced twice is read once).
      const start = this.head;
      const first = this.pending[start].block;
      let last = first;
      let at = start + 1;
      while (at < this.pending.length) {
        const b = this.pending[at].block;
        if (b !== last && (b !== last + 1 || b - first + 1 > this.opts.maxBlocks)) break;
        last = b;
        at++;
      }
      this.head = at;
      void this.read(this.pending.slice(start, at), first, last - first + 1);
    }
    this.wake();
  }

  private merge(): void {
    const fresh = (r: Ref) => this.lastSeq[r.page] === r.seq;
    const add = this.incoming.filter(fresh).sort((a, b) => a.block - b.block);
    this.stats.stale += this.incoming.length - add.length;
    this.incoming = [];
    const out: Ref[] = [];
    let i = this.head;
    let j = 0;
    while (i < this.pending.length || j < add.length) {
      const a = this.pending[i];
      if (a && !fresh(a)) {
        this.stats.stale++;
        i++;
      } else if (j >= add.length || (a && a.block <= add[j].block)) out.push(this.pending[i++]);
      else out.push(add[j++]);
    }
    this.pending = out;
    this.head = 0;
  }

  /** References in reads that have not completed. */
  inFlightRefs = 0;

  private async read(run: Ref[], first: number, count: number): Promise<void> {
    if (this.inFlight++ === 0) this.busySince = performance.now();
    this.inFlightRefs += run.length;
    this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.inFlight);
    const t0 = performance.now();
    try {
      const read = Buffer.allocUnsafe(count * PAGE_SIZE);
      await this.storage.readInto(read, first * PAGE_SIZE);
      this.stats.reads++;
      this.stats.bytesRead += read.length;
      this.stats.totalLatencyMs += performance.now() - t0;
      // Hashing runs on the pool; the sequence check and the copy stay here, where newer versions land.
      const { buffer: buf, hashes } = await this.hasher.hashBuffer(read, count);
      const mismatched: number[] = [];
      for (const r of run) {
        if (this.lastSeq[r.page] !== r.seq) {
          this.stats.stale++; // a newer version of this page already arrived: this one must not land
          continue;
        }
        const i = r.block - first;
        const data = buf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
        if (Buffer.compare(hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES), r.hash) !== 0) {
          this.stats.mismatched++;
          mismatched.push(r.page);
          continue;
        }
        this.memory.setPage(r.page, data);
        this.appliedBlock.set(r.page, r.block);
        this.stats.applied++;
      }
      if (mismatched.length) this.onMismatch(mismatched);
    } catch (err) {
      this.failure ??= err as Error;
    } finally {
      if (--this.inFlight === 0) this.stats.busyMs += performance.now() - this.busySince;
      this.inFlightRefs -= run.length;
      this.pump();
    }
  }

  private wake(): void {
    if ((this.idle || this.failure) && this.idleWaiters.length) for (const w of this.idleWaiters.splice(0)) w();
  }
}
