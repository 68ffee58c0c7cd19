/**
 * The state of one source proxy's migration, in one typed object: what the start-up
 * prepared (key, hashing threads, content index, storage identity), QEMU's socket and
 * the link, the batches on their way, the referenced pages kept, and the counts the
 * report gives. Each phase (accept, handshake, stream, finish) works on it.
 */
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import type { Logger } from 'pino';
import { BufferPool } from '../../../nbd/index.ts';
import { HashPool } from '../../migrate/hash-pool.ts';
import { RateLimit } from '../../migrate/rate-limit.ts';
import type { ContentIndexClient } from '../../storage/content-index/client.ts';
import { MAX_REF_RUN, QemuStreamFrame, type Channel, type LinkSecurity, type QemuDone, type QemuRamBlock, type StorageIdentity, type Welcome } from '../../wire/index.ts';
import { deferred } from '../deferred.ts';
import type { Endpoint } from '../endpoint.ts';
import { StallWatch } from '../stall.ts';
import type { ProgressHook, ProxyProgress } from '../progress.ts';
import { Batcher } from './batcher.ts';
import type { Batch } from './batch.ts';
import type { QemuRecord } from '../../qemu/stream/index.ts';
import { KeptPages } from './kept-pages.ts';

export interface SourceProxyOptions {
  /** Where QEMU connects (`migrate unix:PATH` or `tcp:HOST:PORT`). */
  from: Endpoint;
  /** The destination proxy. */
  to: { host: string; port: number };
  /** TLS credentials (null: a plain link, the key then travels in HELLO). */
  security: LinkSecurity | null;
  /** The guest's disk as this host reaches it (an NBD URI or a path): its identity goes in HELLO. */
  disk: string;
  /** The content index's query socket, and the export it indexes; null: no references. */
  index: { address: string; exportName: string } | null;
  /** Link bytes per second (0: no limit). */
  maxBandwidth: number;
  /** Referenced pages kept for re-requests before QEMU's stream is paused. */
  keepBytes: number;
  /** Stream bytes in flight between the QEMUs before QEMU's stream is paused (default DEFAULT_WINDOW_BYTES). */
  windowBytes?: number;
  name: string;
  log: Logger;
  /** Told once the proxy waits for QEMU. */
  onListening?: (at: Endpoint) => void;
  progress?: ProgressHook;
}

export interface SourceCounts {
  full: number;
  zero: number;
  ref: number;
  refRuns: number;
  refRetried: number;
  lookups: number;
}

export class SourceProxySession {
  readonly t0 = performance.now();
  tConnected = 0;
  /** This process's CPU time (ms) when it was connected: the migration's share is what comes after. */
  cpuConnected = 0;
  /** Keys the storage sample and every reference's hash: fresh per migration on a plain link, the TLS session's once connected. */
  key: Buffer = randomBytes(32);
  /** Whether the key came from the link (TLS): HELLO then carries none. */
  keyFromLink = false;
  readonly limit: RateLimit;
  /** Keyed hashing threads, started before QEMU connects (their boot stays out of the migration); under TLS keyed at the handshake. */
  readonly hasher: HashPool;
  readonly pool = new BufferPool(192);
  readonly kept = new KeptPages(this.pool);
  readonly frame = new QemuStreamFrame();
  readonly batcher: Batcher;
  readonly counts: SourceCounts = { full: 0, zero: 0, ref: 0, refRuns: 0, refRetried: 0, lookups: 0 };
  /** Settled by the handshake (started once the stream has declared its RAM blocks). */
  readonly handshaken = deferred<void>();
  /** Rejected by the first failure of any part; every phase races it. */
  readonly failed = deferred<never>();
  readonly done = deferred<QemuDone>();
  doneValue: QemuDone | null = null;
  readonly stall: StallWatch;

  identity!: StorageIdentity;
  diskBlocks = 0;
  index: ContentIndexClient | null = null;
  server: net.Server | null = null;
  qemu: net.Socket | null = null;
  channel: Channel | null = null;
  welcome: Welcome | null = null;
  /** Whether both hosts see the same disk: the destination's check, corrected for the guest's writes. */
  storage: { match: boolean; reason?: string } = { match: false };
  handshakeStarted = false;
  useRefs = false;
  maxRun = MAX_REF_RUN;
  machine = '';
  readonly ramBlocks: QemuRamBlock[] = [];
  /** Batches sealed and not yet sent, and the chain that sends them in order. */
  pending = 0;
  sending: Promise<void> = Promise.resolve();
  qemuPaused = false;
  /** Stream bytes the destination has written to its QEMU (QEMU_ACK). */
  streamAcked = 0;
  streamEnded = false;
  failure: Error | null = null;
  /** The destination has been sent the failure. */
  told = false;

  constructor(
    readonly opts: SourceProxyOptions,
    on: { sealed: (s: SourceProxySession, b: Batch) => void; record: (s: SourceProxySession, r: QemuRecord) => void },
  ) {
    this.limit = new RateLimit(opts.maxBandwidth);
    this.hasher = new HashPool(opts.security ? null : this.key);
    this.batcher = new Batcher(this.pool, { sealed: (b) => on.sealed(this, b), record: (r) => on.record(this, r) });
    this.stall = new StallWatch(() => this.waitingFor(), (e) => this.fail(e));
  }

  progress(): ProxyProgress {
    const phase = !this.qemu ? 'waiting' : this.streamEnded ? 'finishing' : 'migrating';
    return { phase, streamBytes: this.streamBytes, linkBytes: this.linkBytes, refPages: this.counts.ref };
  }

  get log(): Logger {
    return this.opts.log;
  }

  /** Stream bytes read from QEMU so far. */
  get streamBytes(): number {
    return this.batcher.offset;
  }

  get linkBytes(): number {
    return this.channel ? this.channel.bytesSent + this.channel.bytesReceived : 0;
  }

  /** The first failure wins; later ones are the same failure seen from elsewhere. */
  fail(err: unknown): void {
    if (this.failure) return;
    this.failure = err as Error;
    this.failed.reject(this.failure);
  }

  private waitingFor(): string {
    if (!this.qemu) return "QEMU's connection";
    if (!this.handshaken.settled) return 'the destination proxy to answer HELLO';
    if (this.qemuPaused) return 'the destination proxy to acknowledge references (or the link to take more)';
    if (this.done.settled || this.pending === 0) return 'QEMU to send more of its stream, or the destination to finish';
    return 'the content index and the link';
  }
}
