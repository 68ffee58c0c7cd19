/**
 * The destination's fetch queue (DESIGN.md, step 3): block references wait here
 * while the migration goes on; they are sorted by block and coalesced into large
 * reads of nearby blocks (about `maxBlocks` per read, reading through gaps of up to
 * `maxGap` blocks, which costs less than another round trip), with up to
 * `maxInFlight` reads and `maxBytesInFlight` bytes outstanding: scattered single
 * blocks need many small reads in flight, large runs few big ones. A reference covers a run of `count` pages on as many
 * consecutive blocks (1 for a plain REF). Each is checked against the keyed hash it
 * carries, and each of its pages is applied only if no newer version of that page
 * arrived meanwhile (sequence numbers); a mismatch asks the source for the pages.
 */
import type { BlockBackend } from '../storage/backend.ts';
import { HASH_BYTES, PAGE_SIZE } from '../wire/index.ts';
import { BufferPool } from '../../nbd/index.ts';

/** Reads from one page on come from the pool: each owns its ArrayBuffer, which moves to a hashing thread and back without a copy. */
const POOLED_FROM = PAGE_SIZE;
import type { HashPool } from './hash-pool.ts';

/**
 * Where resolved pages go. A "page" is the owner's id for one 4 KiB slot: a page of
 * guest memory for the destination, a page record of a QEMU stream for its proxy.
 */
export interface FetchTarget {
  /** Whether version `seq` of the page is still the one wanted (a newer one may have overtaken it). */
  isCurrent(page: number, seq: number): boolean;
  /** The page's verified bytes, from `block` (a view, valid only during the call). */
  apply(page: number, bytes: Uint8Array, block: number): void;
  /** Pages whose keyed hash did not match: ask for them in full. */
  mismatched(pages: number[]): void;
  /** A block that arrived for a page a newer version had overtaken, and matched its hash (not applied). */
  stale?(page: number, bytes: Uint8Array): void;
}

interface Ref {
  page: number;
  block: number;
  count: number;
  hash: Uint8Array;
  /** The first page's sequence number; page + i has seq + i. */
  seq: number;
}

export interface FetchStats {
  refs: number; // pages referenced
  applied: number;
  stale: number; // a newer version of the page arrived before the block did
  mismatched: number;
  reads: number;
  bytesRead: number;
  /** Referenced pages in completed reads (bytesRead also counts the gaps read through). */
  pagesResolved: number;
  maxInFlight: number;
  totalLatencyMs: number;
  /** Time with at least one read outstanding: storage throughput is bytesRead over this. */
  busyMs: number;
}

export interface FetchOptions {
  maxInFlight: number;
  maxBytesInFlight: number;
  maxBlocks: number;
  maxGap: number;
  /** Arrivals that trigger a sort and merge at once. */
  batch: number;
  /**
   * Read in arrival order instead of block order (coalescing only neighbours in that
   * order): for a consumer that needs the pages in the order they came, as QEMU's stream
   * does, block order made the oldest reference wait behind later ones.
   */
  inOrder?: boolean;
}

export const FETCH_DEFAULTS: FetchOptions = { maxInFlight: 64, maxBytesInFlight: 16 << 20, maxBlocks: 256, maxGap: 16, batch: 1024 };

export class FetchQueue {
  /** Arrivals since the last pump, unsorted. */
  private incoming: Ref[] = [];
  /** Waiting references sorted by block; pending[head..] are still to read. */
  private pending: Ref[] = [];
  private head = 0;
  private inFlight = 0;
  private bytesInFlight = 0;
  /** Pages in `incoming` and `pending[head..]`. */
  private waitingPages = 0;
  private timer: NodeJS.Timeout | null = null;
  private idleWaiters: (() => void)[] = [];
  private failure: Error | null = null;
  readonly stats: FetchStats = { refs: 0, applied: 0, stale: 0, mismatched: 0, reads: 0, bytesRead: 0, pagesResolved: 0, maxInFlight: 0, totalLatencyMs: 0, busyMs: 0 };
  private busySince = 0;
  /** Pages in reads that have not completed. */
  inFlightPages = 0;
  /** Read buffers are reused: a fresh 1 MiB per read made the garbage collector a main cost. */
  private readonly buffers = new BufferPool(32, Infinity, POOLED_FROM);

  constructor(
    private readonly storage: BlockBackend,
    private readonly hasher: HashPool,
    private readonly target: FetchTarget,
    private readonly opts: FetchOptions = FETCH_DEFAULTS,
  ) {}

  /** Pages page..page+count-1 are blocks block.., with sequence numbers seq..; `hash` covers them all. */
  add(page: number, block: number, hash: Uint8Array, seq: number, count = 1): void {
    if (this.failure) return; // the destination reports the failure (see `error`); nothing more is read
    this.incoming.push({ page, block, count, hash: Buffer.from(hash), seq });
    this.stats.refs += count;
    this.waitingPages += count;
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

  /** Time with reads outstanding so far, the current stretch included. */
  get busyNowMs(): number {
    return this.stats.busyMs + (this.inFlight > 0 ? performance.now() - this.busySince : 0);
  }

  /** Referenced pages waiting for a read (not yet issued). */
  get backlog(): number {
    return this.waitingPages;
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

  /** Whether any page of the reference is still its newest version. */
  private fresh(r: Ref): boolean {
    for (let i = 0; i < r.count; i++) if (this.target.isCurrent(r.page + i, r.seq + i)) return true;
    return false;
  }

  private drop(r: Ref): void {
    this.stats.stale += r.count;
    this.waitingPages -= r.count;
  }

  /**
   * Merges new arrivals (sorted as a batch) into the sorted pending list, dropping
   * references newer page versions have overtaken, then issues runs of adjacent
   * blocks from the front. Re-sorting everything on every completion was the
   * queue's bottleneck: this keeps each pump linear in what it touches.
   */
  private pump(): void {
    if (this.failure) return this.wake();
    // Merging copies the whole pending list: do it when the list runs dry or when arrivals are a
    // fair share of it, not on every completion (that cost ~150 ms of a 256 MiB migration).
    const waiting = this.pending.length - this.head;
    if (this.opts.inOrder) this.append();
    else if (this.incoming.length && (waiting < this.opts.maxBlocks || this.incoming.length >= waiting >> 2)) this.merge();
    while (this.inFlight < this.opts.maxInFlight && this.head < this.pending.length) {
      // One read: references on nearby or shared blocks, about maxBlocks (a reference is never split).
      const start = this.head;
      const first = this.pending[start].block;
      let end = first + this.pending[start].count;
      let at = start + 1;
      while (at < this.pending.length) {
        const r = this.pending[at];
        const e = Math.max(end, r.block + r.count);
        if (r.block < first || r.block > end + this.opts.maxGap || e - first > this.opts.maxBlocks) break;
        end = e;
        at++;
      }
      // The byte bound holds whole reads; only a read alone may exceed it (a reference is never split).
      if (this.inFlight > 0 && this.bytesInFlight + (end - first) * PAGE_SIZE > this.opts.maxBytesInFlight) break;
      this.head = at;
      const run = this.pending.slice(start, at);
      for (const r of run) this.waitingPages -= r.count;
      void this.read(run, first, end - first);
    }
    this.wake();
  }

  /** Arrival order: new references go to the back as they are (compacting the front now and then). */
  private append(): void {
    if (this.head > 4096 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    for (const r of this.incoming) {
      if (this.fresh(r)) this.pending.push(r);
      else this.drop(r);
    }
    this.incoming = [];
  }

  private merge(): void {
    const add: Ref[] = [];
    for (const r of this.incoming) {
      if (this.fresh(r)) add.push(r);
      else this.drop(r);
    }
    add.sort((a, b) => a.block - b.block);
    this.incoming = [];
    const out: Ref[] = [];
    let i = this.head;
    let j = 0;
    while (i < this.pending.length || j < add.length) {
      const a = this.pending[i];
      if (a && !this.fresh(a)) {
        this.drop(a);
        i++;
      } else if (j >= add.length || (a && a.block <= add[j].block)) out.push(this.pending[i++]);
      else out.push(add[j++]);
    }
    this.pending = out;
    this.head = 0;
  }

  private async read(run: Ref[], first: number, count: number): Promise<void> {
    if (this.inFlight++ === 0) this.busySince = performance.now();
    this.bytesInFlight += count * PAGE_SIZE;
    const pages = run.reduce((n, r) => n + r.count, 0);
    this.inFlightPages += pages;
    this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.inFlight);
    const t0 = performance.now();
    try {
      const read = this.buffers.get(count * PAGE_SIZE);
      await this.storage.readInto(read, first * PAGE_SIZE);
      this.stats.reads++;
      this.stats.bytesRead += read.length;
      this.stats.totalLatencyMs += performance.now() - t0;
      // Hashing runs on the pool; the sequence check and the copy stay here, where newer versions land.
      const ranges = new Uint32Array(run.length * 2);
      run.forEach((r, i) => ((ranges[2 * i] = r.block - first), (ranges[2 * i + 1] = r.count)));
      const { buffer: buf, hashes } = await this.hasher.hashBuffer(read, ranges, true); // a pooled buffer moves whole
      const mismatched: number[] = [];
      run.forEach((r, k) => {
        const ok = Buffer.compare(hashes.subarray(k * HASH_BYTES, (k + 1) * HASH_BYTES), r.hash) === 0;
        for (let i = 0; i < r.count; i++) {
          const page = r.page + i;
          const at = (r.block - first + i) * PAGE_SIZE;
          if (!this.target.isCurrent(page, r.seq + i)) {
            this.stats.stale++; // a newer version of this page already arrived: this one must not land
            if (ok) this.target.stale?.(page, buf.subarray(at, at + PAGE_SIZE));
          } else if (!ok) {
            this.stats.mismatched++;
            mismatched.push(page);
          } else {
            this.target.apply(page, buf.subarray(at, at + PAGE_SIZE), r.block + i);
            this.stats.applied++;
          }
        }
      });
      this.buffers.put(buf); // small ones were never pooled: put() ignores them
      this.stats.pagesResolved += pages;
      if (mismatched.length) this.target.mismatched(mismatched);
    } catch (err) {
      this.failure ??= err as Error;
    } finally {
      if (--this.inFlight === 0) this.stats.busyMs += performance.now() - this.busySince;
      this.bytesInFlight -= count * PAGE_SIZE;
      this.inFlightPages -= pages;
      this.pump();
    }
  }

  private wake(): void {
    if ((this.idle || this.failure) && this.idleWaiters.length) for (const w of this.idleWaiters.splice(0)) w();
  }
}
