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
import { pageHash } from '../wire/handshake.ts';

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
}

export class FetchQueue {
  private pending: Ref[] = [];
  private inFlight = 0;
  private timer: NodeJS.Timeout | null = null;
  private idleWaiters: (() => void)[] = [];
  private failure: Error | null = null;
  readonly stats: FetchStats = { refs: 0, applied: 0, stale: 0, mismatched: 0, reads: 0, bytesRead: 0, maxInFlight: 0, totalLatencyMs: 0 };
  /** Pages applied from a reference, with their blocks: where the destination's p2b map starts. */
  readonly appliedBlock: Map<number, number> = new Map();

  constructor(
    private readonly storage: BlockBackend,
    private readonly key: Buffer,
    private readonly memory: GuestMemory,
    private readonly lastSeq: Uint32Array,
    private readonly onMismatch: (pages: number[]) => void,
    private readonly opts = { maxInFlight: 16, maxBlocks: 256, batch: 1024 },
  ) {}

  add(page: number, block: number, hash: Uint8Array, seq: number): void {
    if (this.failure) throw this.failure;
    this.pending.push({ page, block, hash: Buffer.from(hash), seq });
    this.stats.refs++;
    // Enough for a good sort: go now; otherwise soon, so the queue never idles behind the link.
    if (this.pending.length >= this.opts.batch) this.pump();
    else this.timer ??= setTimeout(() => ((this.timer = null), this.pump()), 2);
  }

  get idle(): boolean {
    return this.pending.length === 0 && this.inFlight === 0;
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

  private pump(): void {
    if (this.failure || this.inFlight >= this.opts.maxInFlight || !this.pending.length) return this.wake();
    this.pending.sort((a, b) => a.block - b.block);
    let at = 0;
    while (this.inFlight < this.opts.maxInFlight && at < this.pending.length) {
      // One run: consecutive blocks, at most maxBlocks (a block referenced twice is read once).
      const first = this.pending[at].block;
      let last = first;
      const start = at++;
      while (at < this.pending.length) {
        const b = this.pending[at].block;
        if (b !== last && (b !== last + 1 || b - first + 1 > this.opts.maxBlocks)) break;
        last = b;
        at++;
      }
      void this.read(this.pending.slice(start, at), first, last - first + 1);
    }
    this.pending = this.pending.slice(at);
    this.wake();
  }

  private async read(run: Ref[], first: number, count: number): Promise<void> {
    this.inFlight++;
    this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.inFlight);
    const t0 = performance.now();
    const buf = Buffer.allocUnsafe(count * PAGE_SIZE);
    try {
      await this.storage.readInto(buf, first * PAGE_SIZE);
      this.stats.reads++;
      this.stats.bytesRead += buf.length;
      this.stats.totalLatencyMs += performance.now() - t0;
      const mismatched: number[] = [];
      for (const r of run) {
        if (this.lastSeq[r.page] !== r.seq) {
          this.stats.stale++; // a newer version of this page already arrived: this one must not land
          continue;
        }
        const data = buf.subarray((r.block - first) * PAGE_SIZE, (r.block - first + 1) * PAGE_SIZE);
        if (!pageHash(this.key, data).equals(r.hash)) {
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
      this.inFlight--;
      this.pump();
    }
  }

  private wake(): void {
    if ((this.idle || this.failure) && this.idleWaiters.length) for (const w of this.idleWaiters.splice(0)) w();
  }
}
