/**
 * Sends pages: each goes as zero, as a block reference (its mapping is
 * referenceable now and references were negotiated), or as bytes: whole, or
 * through the page codecs (XBZRLE, LZ4; page-codecs.ts) when negotiated. Reference
 * candidates are hashed on the pool straight from guest memory, as runs:
 * consecutive pages on consecutive blocks share one reference and one keyed hash.
 * A mapping dropped while its run was being hashed sends the run's pages as bytes.
 */
import { NO_BLOCK } from '../../p2b/map.ts';
import { FRAME_HEADER_BYTES, HASH_BYTES, PageBatch, REGION_PAGES } from '../../wire/index.ts';
import type { SourceSession } from './session.ts';
import { LinkMeter, RefPolicy } from './ref-policy.ts';

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

/** Frames at least this big time the link (a quarter of a full frame). */
const LINK_SAMPLE_BYTES = 256 * 1024;

/** Candidates hashed per job: enough to amortise the round trip to the pool. */
const HASH_BATCH = 1024;

export class PageSender {
  private readonly batch = new PageBatch();
  private readonly runs: RefRuns;
  /** Strategy `auto`: which mapped pages go as references; otherwise all of them do. */
  readonly policy: RefPolicy | null;
  /** Time spent handing big frames to the link (rate limit and back-pressure included): its capacity, however busy it was kept. */
  readonly link = new LinkMeter();

  constructor(private readonly s: SourceSession) {
    this.runs = new RefRuns(s.maxRun);
    const inputs = { referenceable: (p: number) => s.guest.map.referenceable(p), maxBandwidth: s.opts.maxBandwidth, progress: () => s.heard.progress, refsSent: () => s.refsSent };
    this.policy = s.opts.strategy === 'auto' ? new RefPolicy(inputs, this.link) : null;
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
      this.policy?.sentOther();
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
      return;
    }
    const live = this.corruptForTest(p) ?? s.guest.memory.page(p);
    if (s.codecs.active) s.codecs.add(this.batch, p, seq, live);
    else this.batch.addFull(p, seq, live);
  }

  private async flushRefs(): Promise<void> {
    const { s, runs } = this;
    if (!runs.pages) return;
    // Decided before hashing: a run that goes in full costs no hash.
    const chosen = runs.first.map((_, r) => this.policy?.takeRun(runs.count[r]) ?? true);
    const ranges = runs.ranges().filter((_, i) => chosen[i >> 1]);
    const hashes = ranges.length ? await s.hasher.hashMemory(ranges) : new Uint8Array(0);
    const map = s.guest.map;
    for (let r = 0, h = 0; r < runs.first.length; r++) {
      const [first, count, block] = [runs.first[r], runs.count[r], runs.block[r]];
      let intact = chosen[r];
      const hash = intact ? hashes.subarray(h * HASH_BYTES, ++h * HASH_BYTES) : null;
      for (let i = 0; i < count && intact; i++) intact = map.referenceable(first + i) && map.block[first + i] === block + i;
      if (intact) {
        this.batch.addRef(first, s.seq + 1, block, count, hash!);
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
    const bytes = this.batch.length;
    const t0 = performance.now();
    await this.s.limit.take(bytes + FRAME_HEADER_BYTES);
    // Taken after the wait: views of guest memory go out with the newest bytes.
    await this.s.channel.sendParts('PAGES', this.batch.takeParts());
    const ms = performance.now() - t0;
    // Big frames only: a small one fits the socket's buffer and says nothing of the link.
    if (bytes >= LINK_SAMPLE_BYTES) this.link.record(bytes, ms);
    this.s.codecs.link.sent(bytes + FRAME_HEADER_BYTES, ms);
  }

  /** Test-only fault (faults.ts): a copy of the round's first full page, one byte flipped (memory stays intact). */
  private corruptForTest(page: number): Uint8Array | undefined {
    const f = this.s.opts.faults;
    if (!f?.corruptWirePage || f.fired?.corruptWirePage !== undefined || this.s.rounds.length !== f.corruptWirePage.round) return undefined;
    const copy = Buffer.from(this.s.guest.memory.page(page));
    copy[100] ^= 0xff;
    (f.fired ??= {}).corruptWirePage = page;
    this.s.log.warn({ page }, 'fault: page corrupted on the wire');
    return copy;
  }
}
