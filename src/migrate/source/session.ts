/**
 * The state of one outgoing migration that crosses its phases, in one typed
 * object. Each phase (handshake, precopy, stop-and-copy, verification,
 * switch-over) reads and writes it; nothing else is shared between them.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Guest } from '../../guest/guest.ts';
import { NO_BLOCK } from '../../p2b/map.ts';
import { PAGE_SIZE, type Channel, type Link, type LinkSecurity, type Progress, type Resumed, type Welcome } from '../../wire/index.ts';
import { RateLimit } from '../rate-limit.ts';
import { BandwidthMeter } from '../bandwidth.ts';
import type { HashPool } from '../hash-pool.ts';
import { MemoryDigests } from '../memory-digests.ts';
import type { Faults } from '../faults.ts';
import type { RoundStats, Strategy } from '../result.ts';
import { Convergence } from './convergence.ts';
import type { DiskLease } from '../../storage/disk-lease.ts';
import { PageCodecs, type CodecOptions } from './page-codecs.ts';

export interface MigrateOptions {
  host: string;
  port: number;
  /** Connect to this Unix socket instead of host:port. */
  socketPath?: string;
  /** TLS credentials (wire/transport): the link is TLS and the key comes from the session. */
  security?: LinkSecurity | null;
  strategy: Strategy;
  /** Bytes per second; 0 for no limit. */
  maxBandwidth: number;
  downtimeLimitMs: number;
  maxRounds: number;
  /** When rounds do not converge: throttle the guest step by step, or give up. */
  converge: 'throttle' | 'abort';
  onRound?: (r: RoundStats) => void;
  /** How long to wait for the destination to verify and resume after stop-and-copy. */
  completeTimeoutMs?: number;
  /** After the switch-over keep the guest here, paused with memory intact ('postmigrate'), instead of stopping it. */
  keepPaused?: boolean;
  log?: Logger;
  /** LZ4 for full pages: 'auto' (default) while the link is the bottleneck, 'always', or 'off'. */
  compress?: CodecOptions['compress'];
  /** Bytes of sent pages kept for XBZRLE deltas (default 64 MiB, QEMU's); 0: no XBZRLE. */
  xbzrleCacheBytes?: number;
  /** Test-only fault injection (faults.ts). */
  faults?: Faults;
}

/** QEMU's default XBZRLE cache size. */
export const XBZRLE_CACHE_DEFAULT = 64 * 1024 * 1024;

/** What the return path has heard from the destination. */
export interface Heard {
  progress: Progress;
  /** Pages the destination asked for in full, not yet sent. */
  requested: Set<number>;
  resumed: Resumed | null;
  failure: Error | null;
  /** The destination said ERROR: it has given up, so it runs nothing. */
  refused: boolean;
}

export class SourceSession {
  readonly t0 = performance.now();
  /** Keys every page hash and digest: the TLS session's, or fresh per migration on a plain link (then HELLO carries it). */
  readonly key: Buffer;
  readonly channel: Channel;
  /** Whether the key came from the link (TLS): HELLO then carries none. */
  readonly keyFromLink: boolean;
  readonly limit: RateLimit;
  readonly meter = new BandwidthMeter();
  readonly digests: MemoryDigests;
  readonly convergence: Convergence;
  readonly rounds: RoundStats[] = [];
  /** Pages the destination asked for again (their reference failed its check). */
  refRetried = 0;
  /** The block of the last reference sent for each page (NO_BLOCK after a full or zero send). */
  readonly lastRef: Uint32Array;
  readonly heard: Heard = { progress: { refsReceived: 0, pending: 0, applied: 0, bytesRead: 0, readRate: 0, verifyMs: 0 }, requested: new Set(), resumed: null, failure: null, refused: false };
  /** Wakes whoever waits on the return path (a request, RESUMED, a failure); `signalled` keeps a wake-up nobody waited for. */
  private wake: (() => void) | null = null;
  private signalled = false;
  /** The digests' settling, started at pause, awaited by verification. */
  settling: Promise<void> = Promise.resolve();

  welcome!: Welcome;
  /** Whether both hosts see the same storage, the destination's sample corrected for the guest's writes. */
  storage: { match: boolean; reason?: string } = { match: false };
  /** Negotiated in the handshake. */
  useRefs = false;
  maxRun = 1;
  /** How pages that go as bytes are encoded (negotiated in the handshake; until then, whole). */
  codecs = new PageCodecs({ compress: 'off', xbzrleCacheBytes: 0 }, false, false);
  /** The last sequence number used (the first page version sent is 1). */
  seq = 0;
  refsSent = 0;
  /** The dirty pages still to send after the last round. */
  dirty: Uint32Array = new Uint32Array(0);
  // What rollback must undo.
  wasRunning = false;
  paused = false;
  detached = false;
  tPause = 0;
  /** DIGESTS went out: from here the destination may resume the guest at any moment. */
  digestsSent = false;
  /** The guest's lease on its disk, as HELLO stated it; null where the storage grants none. */
  lease: DiskLease | null = null;

  constructor(readonly guest: Guest, readonly opts: MigrateOptions, readonly hasher: HashPool, readonly log: Logger, link: Link) {
    this.channel = link.channel;
    this.key = link.key ?? randomBytes(32);
    this.keyFromLink = link.key !== null;
    this.limit = new RateLimit(opts.maxBandwidth);
    this.digests = new MemoryDigests(hasher, guest.memory.pages, this.key);
    this.convergence = new Convergence(opts);
    this.lastRef = new Uint32Array(guest.memory.pages).fill(NO_BLOCK);
  }

  get pages(): number {
    return this.guest.memory.pages;
  }

  /** Reads and clears the dirty log; the digests learn of every write through here. */
  takeDirty(): Uint32Array {
    const pages = this.guest.memory.dirty.readAndClear();
    this.digests.invalidate(pages);
    return pages;
  }

  /**
   * Clears the dirty bits of pages about to be sent: their bytes are read after this,
   * so a write before it goes with them and is not sent again next round. The digests
   * still learn of every page that was written.
   */
  takeDirtyOf(pages: Uint32Array): void {
    this.digests.invalidate(this.guest.memory.dirty.takePages(pages));
  }

  /** Test-only fault (faults.ts): a write at pause whose dirty bit is lost. */
  untrackedWriteForTest(): void {
    const f = this.opts.faults;
    if (!f?.dropDirtyBit) return;
    const page = this.digests.firstSettledPage();
    if (page === null) return;
    this.guest.memory.page(page)[0] ^= 0xff; // straight into memory: the dirty log never hears of it
    (f.fired ??= {}).dropDirtyBit = page;
    this.log.warn({ page }, 'fault: a write without its dirty bit');
  }

  /** How long the destination still needs for references already sent (its fetch backlog). */
  fetchBacklogMs(): number {
    const p = this.heard.progress;
    const backlog = p.pending + (this.refsSent - p.refsReceived);
    if (backlog <= 0) return 0;
    return p.readRate > 0 ? ((backlog * PAGE_SIZE) / p.readRate) * 1000 : Infinity;
  }

  recordRound(r: RoundStats): void {
    this.rounds.push(r);
    this.opts.onRound?.(r);
  }

  /** Pages the destination asked for, taken out of the request set. */
  takeRequested(): number[] {
    const list = [...this.heard.requested];
    this.heard.requested.clear();
    return list;
  }

  /** Called by the return path whenever it heard something. */
  notify(): void {
    this.signalled = true;
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Resolves when the return path hears something (or heard it since the last call), or after ms. */
  heardSomething(ms: number): Promise<void> {
    if (this.signalled) {
      this.signalled = false;
      return Promise.resolve();
    }
    return new Promise((r) => {
      const t = setTimeout(r, ms);
      this.wake = () => {
        this.signalled = false;
        clearTimeout(t);
        r();
      };
    });
  }

  /** Throws the return path's failure, if it has one. */
  check(): void {
    if (this.heard.failure) throw this.heard.failure;
  }
}
