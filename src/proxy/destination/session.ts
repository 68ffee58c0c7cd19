/**
 * The state of one destination proxy's migration, in one typed object: the link, what
 * HELLO said, the disk and its fetch queue, QEMU's socket and the output rebuilding
 * its stream, the counts the report gives. Each phase (accept, handshake, receive,
 * finish) works on it.
 */
import type net from 'node:net';
import type { Logger } from 'pino';
import { HashPool } from '../../migrate/hash-pool.ts';
import type { FetchQueue } from '../../migrate/fetch-queue.ts';
import type { BlockBackend } from '../../storage/backend.ts';
import type { Channel, Hello, LinkSecurity, LinkServer, QemuEnd } from '../../wire/index.ts';
import { deferred } from '../deferred.ts';
import type { Endpoint } from '../endpoint.ts';
import { StallWatch } from '../stall.ts';
import type { ProgressHook, ProxyProgress } from '../progress.ts';
import type { StorageCheck } from '../../migrate/storage-identity.ts';
import type { QemuOutput } from './output.ts';
import type { RefSlots } from './ref-slots.ts';

export interface DestinationProxyOptions {
  /** Where the source proxy connects. */
  listen: Endpoint;
  /** TLS credentials (null: a plain link, then loopback or a Unix socket only unless `insecure`). */
  security: LinkSecurity | null;
  /** Allow a plain link on an address other hosts can reach. */
  insecure?: boolean;
  /** QEMU's `-incoming` address. */
  to: Endpoint;
  /** The guest's disk as this host reaches it: references are read from here, never from a path the source names. */
  disk: string;
  /** Bytes of stream held here (rebuilt, or waiting for blocks) before the link is no longer read. */
  windowBytes: number;
  log: Logger;
  onListening?: (at: Endpoint) => void;
  progress?: ProgressHook;
}

export class DestinationProxySession {
  readonly t0 = performance.now();
  tConnected = 0;
  /** This process's CPU time (ms) when it was connected: the migration's share is what comes after. */
  cpuConnected = 0;
  /** Keyed hashing threads, started before the source connects; the key comes from the TLS session or with HELLO. */
  readonly hasher = new HashPool(null);
  readonly failed = deferred<never>();
  /** Resolved once QEMU_END came and everything before it went to QEMU. */
  readonly complete = deferred<void>();
  readonly stall: StallWatch;
  server: LinkServer | null = null;
  channel: Channel | null = null;
  /** The TLS session's key (null on a plain link: HELLO carries it). */
  linkKey: Buffer | null = null;
  hello!: Hello;
  storage: BlockBackend | null = null;
  storageMatch: StorageCheck = { match: false, sameSize: false, other: false, differs: [], bytes: 0 };
  diskBlocks = 0;
  qemu: net.Socket | null = null;
  qemuClosed = false;
  /** QEMU closed its socket after taking every byte handed to it, before QEMU_END came: the failure, unless QEMU_END says that was all. */
  qemuGone: Error | null = null;
  fetch: FetchQueue | null = null;
  output: QemuOutput | null = null;
  slots: RefSlots | null = null;
  end: QemuEnd | null = null;
  acked = 0;
  ackedStream = 0;
  lastWritten = 0;
  /** Acknowledges referenced pages written to QEMU (set up with the output). */
  sendAck: () => void = () => {};
  backlog = { max: 0, sum: 0, samples: 0 };
  failure: Error | null = null;

  constructor(readonly opts: DestinationProxyOptions) {
    this.stall = new StallWatch(() => this.waitingFor(), (e) => this.fail(e));
  }

  progress(): ProxyProgress {
    const phase = !this.output ? 'waiting' : this.end ? 'finishing' : 'migrating';
    return { phase, streamBytes: this.output?.written ?? 0, linkBytes: this.linkBytes, refPages: this.slots?.received ?? 0 };
  }

  get log(): Logger {
    return this.opts.log;
  }

  get linkBytes(): number {
    return this.channel ? this.channel.bytesSent + this.channel.bytesReceived : 0;
  }

  fail(err: unknown): void {
    if (this.failure) return;
    this.failure = err as Error;
    this.failed.reject(this.failure);
  }

  private waitingFor(): string {
    if (!this.output) return 'the source proxy to send HELLO';
    if (this.fetch && !this.fetch.idle) return 'the storage to answer reads';
    if (this.output.held > 0) return 'QEMU to read its stream';
    return 'the source proxy to send more of the stream';
  }
}
