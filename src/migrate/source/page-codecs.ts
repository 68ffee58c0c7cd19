/**
 * How a page that goes as bytes is encoded: as an XBZRLE delta against the copy
 * the destination holds (pages re-sent after round 0, while the cache keeps
 * them), LZ4-compressed (only while the link is the bottleneck and compressing
 * saves link time), or whole. Each switches itself off where it does not pay:
 * XBZRLE after a round whose deltas saved under a tenth, LZ4 whenever the link
 * is not what limits the sender or the samples do not compress.
 */
import { PAGE_SIZE, XBZRLE_LIMIT, lz4Compress, xbzrleEncode, type PageBatch } from '../../wire/index.ts';
import { XbzrleCache } from './xbzrle-cache.ts';
import { LinkMeter } from './link-meter.ts';

export interface CodecOptions {
  /** 'auto': LZ4 when the link is the bottleneck; 'always': every full page that shrinks; 'off': never. */
  compress: 'auto' | 'always' | 'off';
  /** Bytes of sent pages kept for XBZRLE; 0: no XBZRLE. */
  xbzrleCacheBytes: number;
}

/** What the codecs did, for the migration's report. */
export interface CodecReport {
  lz4Pages: number;
  xbzrlePages: number;
  /** Page bytes the codecs kept off the link (4096 per page minus what went). */
  savedBytes: number;
  /** Why XBZRLE stopped, if it did; whether LZ4 was ever chosen. */
  xbzrleOff: string | null;
  lz4Used: boolean;
}

/** Snapshots and deltas are carved from arenas this big, never reused: a batch sends them as views (writev). */
const ARENA_BYTES = 64 * PAGE_SIZE;

/** While LZ4 is off, one full page in this many is compressed anyway, to keep its estimates current. */
const SAMPLE_EVERY = 32;
/** A round's deltas must save this share of the bytes tried, or XBZRLE stops. */
const XBZRLE_MIN_SAVING = 0.1;
/** Attempts a round needs before its savings decide anything. */
const XBZRLE_MIN_TRIES = 32;

export class PageCodecs {
  private cache: XbzrleCache | null;
  private readonly lz4: boolean;
  private readonly lz4Always: boolean;
  private arena = Buffer.allocUnsafe(0);
  private arenaAt = 0;
  private readonly delta = Buffer.allocUnsafe(PAGE_SIZE);
  readonly link = new LinkMeter();
  /** Compress samples: bytes in and out; ms per page, an average that ignores a sample preempted by the scheduler. */
  private readonly lz4Stats = { in: 0, out: 0, msPerPage: 0 };
  private roundTries = { pages: 0, out: 0 };
  private round = 0;
  private fullSeen = 0;
  readonly report: CodecReport = { lz4Pages: 0, xbzrlePages: 0, savedBytes: 0, xbzrleOff: null, lz4Used: false };

  constructor(opts: CodecOptions, canLz4: boolean, canXbzrle: boolean) {
    this.lz4 = canLz4 && opts.compress !== 'off';
    this.lz4Always = this.lz4 && opts.compress === 'always';
    this.cache = canXbzrle && opts.xbzrleCacheBytes >= PAGE_SIZE ? new XbzrleCache(opts.xbzrleCacheBytes) : null;
    if (!this.cache) this.report.xbzrleOff = canXbzrle ? 'no cache (--xbzrle-cache 0)' : 'not negotiated: the destination does not speak pages.xbzrle';
  }

  /** True when a page may go otherwise than whole: the sender then hands every byte page here. */
  get active(): boolean {
    return this.cache !== null || this.lz4;
  }

  /** Compress only when the link limits the sender and compressing a page costs less time than its saved bytes would on the link. */
  get compressing(): boolean {
    if (this.lz4Always) return true;
    const { in: bytesIn, out, msPerPage } = this.lz4Stats;
    if (!this.lz4 || bytesIn < 16 * PAGE_SIZE || !this.link.boundRate) return false;
    const ratio = out / bytesIn;
    const compressRate = (PAGE_SIZE / Math.max(msPerPage, 1e-4)) * 1000;
    return ratio < 0.9 && compressRate * (1 - ratio) > this.link.boundRate;
  }

  /** Adds a non-zero page to the batch: from a snapshot, so what the cache keeps is what goes out. */
  add(batch: PageBatch, page: number, seq: number, live: Uint8Array): void {
    const lz4 = this.lz4Mode();
    // Nothing to compress and nothing to cache (off, or round 0, whose pages are not kept): no copy, no work.
    if (lz4 === 'none' && (!this.cache || this.round === 0)) return batch.addFull(page, seq, live);
    const snap = this.carve(PAGE_SIZE);
    snap.set(live);
    if (this.cache && this.tryDelta(batch, page, seq, snap)) return;
    const body = lz4 === 'none' ? null : this.compress(snap, lz4 === 'use');
    if (body) batch.addLz4(page, seq, body);
    else batch.addFull(page, seq, snap);
  }

  /** `bytes` of an arena no one else writes: the batch holds views of it until the socket has taken them. */
  private carve(bytes: number): Buffer {
    if (this.arenaAt + bytes > this.arena.length) {
      this.arena = Buffer.allocUnsafe(ARENA_BYTES);
      this.arenaAt = 0;
    }
    return this.arena.subarray(this.arenaAt, (this.arenaAt += bytes));
  }

  /** Whether this page is compressed to send, compressed only as a sample while LZ4 is off, or not at all. */
  private lz4Mode(): 'use' | 'sample' | 'none' {
    if (!this.lz4) return 'none';
    if (this.compressing) return 'use';
    return this.fullSeen++ % SAMPLE_EVERY === 0 ? 'sample' : 'none';
  }

  private tryDelta(batch: PageBatch, page: number, seq: number, snap: Buffer): boolean {
    const cache = this.cache!;
    const slot = cache.lookup(page);
    if (slot < 0) {
      if (this.round > 0) cache.put(page, snap, seq); // pages dirtied again after round 0 are the ones worth keeping
      return false;
    }
    const n = xbzrleEncode(cache.bytes(slot), snap, this.delta, XBZRLE_LIMIT);
    this.roundTries.pages++;
    this.roundTries.out += n < 0 ? PAGE_SIZE : n + 4;
    if (n >= 0) {
      const delta = this.carve(n);
      delta.set(this.delta.subarray(0, n));
      batch.addXbzrle(page, seq, cache.seq(slot), delta);
      this.report.xbzrlePages++;
      this.report.savedBytes += PAGE_SIZE - n - 4;
    }
    cache.put(page, snap, seq);
    return n >= 0;
  }

  /** The snapshot compressed; null when it does not shrink or this was a sample only. */
  private compress(snap: Buffer, use: boolean): Buffer | null {
    const t0 = performance.now();
    const body = lz4Compress(snap, PAGE_SIZE - 64); // a buffer of its own, as the batch needs
    const ms = performance.now() - t0;
    const st = this.lz4Stats;
    st.msPerPage = st.msPerPage ? st.msPerPage + 0.05 * (Math.min(ms, 3 * st.msPerPage) - st.msPerPage) : ms;
    st.in += PAGE_SIZE;
    st.out += body ? body.length : PAGE_SIZE;
    this.decay();
    if (!use || !body) return null;
    this.report.lz4Pages++;
    this.report.lz4Used = true;
    this.report.savedBytes += PAGE_SIZE - body.length;
    return body;
  }

  /** Halves the compress samples now and then, so the estimate follows what memory holds now. */
  private decay(): void {
    if (this.lz4Stats.in < 1024 * PAGE_SIZE) return;
    this.lz4Stats.in /= 2;
    this.lz4Stats.out /= 2;
  }

  /** The page went as zero or as a reference: the destination no longer holds the cached copy. */
  forget(page: number): void {
    this.cache?.forget(page);
  }

  /** A round ended: XBZRLE stops for good if its deltas did not pay. */
  endRound(): void {
    const t = this.roundTries;
    if (this.cache && t.pages >= XBZRLE_MIN_TRIES && t.out > t.pages * PAGE_SIZE * (1 - XBZRLE_MIN_SAVING)) {
      this.cache = null;
      this.report.xbzrleOff = `round ${this.round}: ${t.pages} deltas saved under ${XBZRLE_MIN_SAVING * 100} %`;
    }
    this.roundTries = { pages: 0, out: 0 };
    this.round++;
  }
}
