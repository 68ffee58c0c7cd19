/**
 * The digests both sides compare before the destination resumes (docs/protocol.md,
 * "Verification"). Memory is cut into chunks of DIGEST_CHUNK_PAGES pages; each
 * chunk has an HMAC-SHA-256, and a region's digest is the HMAC of its chunks'
 * digests in order. Chunk digests are kept current while the migration runs, so
 * downtime only rehashes the chunks written since: hashing all of an 8 GiB guest
 * at pause would take seconds.
 *
 * A chunk is stale from the moment a write to it is seen (`invalidate`, fed from
 * the dirty log) until a hash started after that moment completes. Every write
 * marks the dirty log after the data lands, so a write during a hash shows up in
 * a later read of the log and makes the chunk stale again; the version counter
 * makes a hash that was overtaken by a write never count.
 */
import type { RegionLayout } from '../guest/layout.ts';
import type { HashPool } from './hash-pool.ts';
import type { DirtyLog } from '../guest/dirty-log.ts';
import { DIGEST_BYTES, DIGEST_CHUNK_PAGES, PAGE_SIZE, REGION_PAGES, digest } from '../wire/index.ts';
/** Chunks per hashing job: about 10 ms of work, so page hashing never waits long behind one. */
const JOB_CHUNKS = 256;

export class MemoryDigests {
  private readonly chunks: number;
  private readonly pages: number;
  private readonly digests: Uint8Array;
  private readonly version: Uint32Array;
  private readonly stale: Uint8Array;
  private staleCount: number;
  private running: Promise<void> | null = null;
  /** Chunks hashed in total, for the report: how much the incremental scheme rehashed. */
  hashedChunks = 0;
  /** Wall time per chunk in the last pass (all lanes together); 64 KiB at ~1.3 GB/s until measured. */
  private msPerChunk = 0.05;

  constructor(
    private readonly pool: HashPool,
    pages: number,
    private readonly key: Buffer,
    /** Memory just allocated, all zero: its digests are known without reading it. */
    zeroed = false,
  ) {
    if (REGION_PAGES % DIGEST_CHUNK_PAGES !== 0) throw new Error('digest chunks must not span regions');
    this.pages = pages;
    this.chunks = Math.ceil(pages / DIGEST_CHUNK_PAGES);
    this.digests = new Uint8Array(this.chunks * DIGEST_BYTES);
    this.version = new Uint32Array(this.chunks);
    this.stale = new Uint8Array(this.chunks).fill(zeroed ? 0 : 1);
    this.staleCount = zeroed ? 0 : this.chunks;
    if (zeroed) {
      const zero = (n: number) => digest(key, new Uint8Array(n * PAGE_SIZE));
      const full = zero(DIGEST_CHUNK_PAGES);
      for (let c = 0; c < this.chunks; c++) this.digests.set(full, c * DIGEST_BYTES);
      const tail = pages % DIGEST_CHUNK_PAGES;
      if (tail) this.digests.set(zero(tail), (this.chunks - 1) * DIGEST_BYTES);
    }
  }

  /** Reads and clears the dirty log, taking note of every page it reports; returns them. */
  readDirty(log: DirtyLog): Uint32Array {
    const pages = log.readAndClear();
    this.invalidate(pages);
    return pages;
  }

  /** Pages written since the log was last read. */
  invalidate(pages: ArrayLike<number>): void {
    for (let i = 0; i < pages.length; i++) {
      const c = Math.floor(pages[i] / DIGEST_CHUNK_PAGES);
      this.version[c]++;
      if (!this.stale[c]) {
        this.stale[c] = 1;
        this.staleCount++;
      }
    }
  }

  get staleChunks(): number {
    return this.staleCount;
  }

  /** How long settling would take now: part of the downtime the source estimates. */
  estimateMs(): number {
    return this.staleCount * this.msPerChunk;
  }

  /** One pass over the chunks stale now, in the background; a call during a pass joins it. */
  refresh(): Promise<void> {
    this.running ??= this.pass().finally(() => (this.running = null));
    return this.running;
  }

  /** Refreshes until nothing is stale. Only for memory nobody writes any more (paused, or drained). */
  async settle(): Promise<void> {
    while (this.staleCount > 0 || this.running) await this.refresh();
  }

  /** The first page of some chunk whose digest is current and not being rehashed (for test faults), or null. */
  firstSettledPage(): number | null {
    for (let c = 0; c < this.chunks; c++) if (!this.stale[c]) return c * DIGEST_CHUNK_PAGES;
    return null;
  }

  /** Per-region digests (hex) over settled chunk digests. */
  regionDigests(layout: RegionLayout[]): string[] {
    if (this.staleCount > 0 || this.running) throw new Error('memory digests are not settled');
    return layout.map((r) => {
      const first = r.firstPage / DIGEST_CHUNK_PAGES;
      const end = Math.ceil((r.firstPage + r.pages) / DIGEST_CHUNK_PAGES);
      return digest(this.key, this.digests.subarray(first * DIGEST_BYTES, end * DIGEST_BYTES)).toString('hex');
    });
  }

  private async pass(): Promise<void> {
    const todo: number[] = [];
    for (let c = 0; c < this.chunks; c++) if (this.stale[c]) todo.push(c);
    let next = 0;
    // One job per worker at a time: page hashing for the rounds shares the pool.
    const lane = async () => {
      while (next < todo.length) {
        const list = Uint32Array.from(todo.slice(next, next + JOB_CHUNKS));
        next += list.length;
        const seen = list.map((c) => this.version[c]);
        const ranges = new Uint32Array(list.length * 2);
        list.forEach((c, i) => {
          ranges[2 * i] = c * DIGEST_CHUNK_PAGES;
          ranges[2 * i + 1] = Math.min(DIGEST_CHUNK_PAGES, this.pages - c * DIGEST_CHUNK_PAGES); // the last may be short
        });
        const out = await this.pool.hashMemory(ranges, DIGEST_BYTES);
        this.hashedChunks += list.length;
        for (let i = 0; i < list.length; i++) {
          const c = list[i];
          if (this.version[c] !== seen[i]) continue; // written meanwhile: still stale
          this.digests.set(out.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES), c * DIGEST_BYTES);
          if (this.stale[c]) {
            this.stale[c] = 0;
            this.staleCount--;
          }
        }
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: this.pool.size }, lane));
    if (todo.length >= JOB_CHUNKS) this.msPerChunk = (performance.now() - t0) / todo.length;
  }
}
