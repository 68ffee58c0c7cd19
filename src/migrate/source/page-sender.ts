/**
 * Sends pages: each goes as zero, as a block reference (its mapping is
 * referenceable now and references were negotiated), or as bytes: whole, or
 * through the page codecs (XBZRLE, LZ4; page-codecs.ts) when negotiated. Reference
 * candidates are hashed on the pool straight from guest memory, as runs:
 * consecutive pages on consecutive blocks share one reference and one keyed hash.
 * A mapping dropped while its run was being hashed sends the run's pages as bytes.
 */
import { NO_BLOCK } from '../../p2b/map.ts';
import { FRAME_HEADER_BYTES, HASH_BYTES, PageBatch, REGION_PAGES, decodePages, ENCODING } from '../../wire/index.ts';
import type { SourceSession } from './session.ts';

export interface Sent {
  /** Pages sent as bytes, LZ4 and XBZRLE pages included. */
  full: number;
  zero: number;
  ref: number;
  lz4: number;
  xbzrle: number;
  bytes: number;
}

/** Reference candidates collected into runs: [first page, count, first block] each. */
class RefRuns {
  readonly first: number[] = [];
  readonly count: number[] = [];
  readonly block: number[] = [];
  pages = 0;
  constructor(private readonly maxRun: number) {}

  add(page: number, block: number): void {
    const n = this.first.length - 1;
    // A run never crosses a memory region: the hashing threads read one region per range.
    if (n >= 0 && this.first[n] + this.count[n] === page && this.block[n] + this.count[n] === block && this.count[n] < this.maxRun && page % REGION_PAGES !== 0) {
      this.count[n]++;
    } else {
      this.first.push(page);
      this.count.push(1);
      this.block.push(block);
    }
    this.pages++;
  }

  ranges(): Uint32Array {
    const out = new Uint32Array(this.first.length * 2);
    this.first.forEach((f, i) => ((out[2 * i] = f), (out[2 * i + 1] = this.count[i])));
    return out;
  }

  clear(): void {
    this.first.length = this.count.length = this.block.length = 0;
    this.pages = 0;
  }
}

/** Candidates hashed per job: enough to amortise the round trip to the pool. */
const HASH_BATCH = 1024;

export class PageSender {
  private readonly batch = new PageBatch();
  private readonly runs: RefRuns;

  constructor(private readonly s: SourceSession) {
    this.runs = new RefRuns(s.maxRun);
  }

  /** Sends the pages; `allowRefs` false sends them in full (pages the destination asked for). */
  async send(list: Iterable<number>, allowRefs: boolean): Promise<Sent> {
    const { s, batch } = this;
    const before = { ...batch.counts };
    const bytes0 = s.channel.bytesSent;
    const map = s.guest.map;
    s.codecs.link.start();
    for (const p of list) {
      s.check();
      if (allowRefs && s.useRefs && map.referenceable(p)) {
        this.runs.add(p, map.block[p]);
        if (this.runs.pages >= HASH_BATCH) await this.flushRefs();
        continue;
      }
      if (!allowRefs) s.codecs.forget(p); // asked for in full: no delta against what the destination may not hold
      this.addBytes(p);
      if (batch.full) await this.flushBatch();
    }
    await this.flushRefs();
    await this.flushBatch();
    const c = batch.counts;
    return {
      full: c.full - before.full, zero: c.zero - before.zero, ref: c.ref - before.ref, lz4: c.lz4 - before.lz4, xbzrle: c.xbzrle - before.xbzrle,
      bytes: s.channel.bytesSent - bytes0,
    };
  }

  /** The page as zero or in full, under a new sequence number. */
  private addBytes(p: number): void {
    const { s } = this;
    const seq = ++s.seq;
    s.lastRef[p] = NO_BLOCK;
    if (s.guest.memory.isZero(p)) {
      this.batch.addZero(p, seq);
      s.codecs.forget(p);
    } else if (s.codecs.active) s.codecs.add(this.batch, p, seq, s.guest.memory.page(p));
    else this.batch.addFull(p, seq, s.guest.memory.page(p));
  }

  private async flushRefs(): Promise<void> {
    const { s, runs } = this;
    if (!runs.pages) return;
    const hashes = await s.hasher.hashMemory(runs.ranges());
    const map = s.guest.map;
    for (let r = 0; r < runs.first.length; r++) {
      const [first, count, block] = [runs.first[r], runs.count[r], runs.block[r]];
      let intact = true;
      for (let i = 0; i < count && intact; i++) intact = map.referenceable(first + i) && map.block[first + i] === block + i;
      if (intact) {
        this.batch.addRef(first, s.seq + 1, block, count, hashes.subarray(r * HASH_BYTES, (r + 1) * HASH_BYTES));
        s.seq += count;
        for (let i = 0; i < count; i++) {
          s.lastRef[first + i] = block + i;
          s.codecs.forget(first + i);
        }
        s.refsSent += count;
      } else {
        for (let i = 0; i < count; i++) {
          this.addBytes(first + i);
          if (this.batch.full) await this.flushBatch();
        }
      }
      if (this.batch.full) await this.flushBatch();
    }
    runs.clear();
  }

  private async flushBatch(): Promise<void> {
    if (this.batch.count === 0) return;
    const payload = this.batch.take();
    this.corruptForTest(payload);
    const t0 = performance.now();
    await this.s.limit.take(payload.length + FRAME_HEADER_BYTES);
    await this.s.channel.send({ name: 'PAGES', body: payload });
    this.s.codecs.link.sent(payload.length + FRAME_HEADER_BYTES, performance.now() - t0);
  }

  /** Test-only fault (faults.ts): one byte of the first full page in the frame flipped. */
  private corruptForTest(payload: Buffer): void {
    const f = this.s.opts.faults;
    if (!f?.corruptWirePage || f.fired?.corruptWirePage !== undefined || this.s.rounds.length !== f.corruptWirePage.round) return;
    decodePages(payload, this.s.pages, (e) => {
      if (e.encoding !== ENCODING.FULL || !('data' in e) || f.fired?.corruptWirePage !== undefined) return;
      e.data[100] ^= 0xff;
      (f.fired ??= {}).corruptWirePage = e.page;
      this.s.log.warn({ page: e.page }, 'fault: page corrupted on the wire');
    });
  }
}
