/**
 * The state of one incoming migration that crosses its phases, in one typed
 * object: what the handshake established, what the receiver has seen, and what
 * the last phases need to verify and start the guest.
 */
import type { Logger } from 'pino';
import { LivemigError } from '../../errors.ts';
import type { Worker } from 'node:worker_threads';
import type { Guest } from '../../guest/guest.ts';
import type { GuestMemory } from '../../guest/memory.ts';
import type { P2bMap } from '../../p2b/map.ts';
import type { BlockBackend } from '../../storage/backend.ts';
import type { Channel, Hello, LinkSecurity, MapCorrections } from '../../wire/index.ts';
import type { HashPool } from '../hash-pool.ts';
import type { MemoryDigests } from '../memory-digests.ts';
import type { Faults } from '../faults.ts';
import type { FetchOptions, FetchQueue } from '../fetch-queue.ts';
import type { StorageCheck } from '../storage-identity.ts';
import type { PageVersions } from './page-versions.ts';
import type { ArrivingMap } from './arriving-map.ts';
import type { MemoryTarget } from './memory-target.ts';

export type DestinationState = 'listening' | 'handshake' | 'receiving' | 'draining' | 'verifying' | 'running' | 'paused' | 'failed';

export interface IncomingOptions {
  host: string;
  port: number;
  /** Listen on this Unix socket instead of host:port. */
  socketPath?: string;
  /** TLS credentials (wire/transport): peers without them are dropped before HELLO; the key comes from the session. */
  security?: LinkSecurity | null;
  /** Listen without TLS on an address other hosts can reach (else only loopback or a Unix socket). */
  insecure?: boolean;
  /** The guest's disk as this host sees it: the only disk this destination opens; a source migrating another is refused. */
  disk: string;
  /** The largest guest memory accepted (default and cap: this host's memory). */
  maxMemoryBytes?: number;
  stateDir: (guestName: string) => string;
  /**
   * The guest's memory size, if known ahead: memory is allocated and faulted in and
   * the guest's worker booted before any source connects, out of the migration's way.
   * A guest of another size is refused.
   */
  memoryBytes?: number;
  /** Fetch queue tuning (defaults: FETCH_DEFAULTS). */
  fetch?: Partial<FetchOptions>;
  /** Leave the arrived guest paused instead of resuming it (QEMU's -S): someone compares memories first. */
  hold?: boolean;
  /** How long a peer may take to send its whole HELLO before it is dropped (default TIMEOUT.HELLO). */
  helloTimeoutMs?: number;
  /** After WELCOME, how long the source may send nothing before the migration is aborted (default TIMEOUT.IDLE). */
  idleTimeoutMs?: number;
  /** The capabilities this destination lists in WELCOME (default: all this build speaks). */
  capabilities?: readonly string[];
  log?: Logger;
  /** Test-only fault injection (faults.ts). */
  faults?: Faults;
}

/** What a destination prepares before a source connects (IncomingOptions.memoryBytes). Used once. */
export interface Prepared {
  memory: GuestMemory;
  map: P2bMap;
  worker: Worker;
  hasher: HashPool;
  /** Resolves once the worker and the hashing threads have loaded their modules. */
  booted: Promise<void>;
}

/** What the receiver has seen of the source's frames. */
export interface Received {
  refs: number;
  device: Buffer | null;
  complete: boolean;
  digests: string[] | null;
  corrections: MapCorrections;
  failure: Error | null;
}

export class DestinationSession {
  readonly received: Received = { refs: 0, device: null, complete: false, digests: null, corrections: { pages: new Uint32Array(0), blocks: new Uint32Array(0) }, failure: null };
  /** Fetch backlog samples, for the report. */
  readonly backlog = { max: 0, sum: 0, samples: 0 };
  hello!: Hello;
  key!: Buffer;
  storage: BlockBackend | null = null;
  storageCheck!: StorageCheck;
  memory!: GuestMemory;
  map!: P2bMap;
  hasher: HashPool | null = null;
  digests!: MemoryDigests;
  versions!: PageVersions;
  arriving!: ArrivingMap;
  queue!: FetchQueue;
  target!: MemoryTarget;
  /** The guest's worker, started during the handshake and ready by the end. */
  starting: Promise<Guest> | null = null;
  guest: Guest | null = null;
  startFailure: Error | null = null;
  /** The disk's lease moved to this side's guest (lease.ts): the guest is this side's from then on. */
  leased = false;
  private wake: (() => void) | null = null;

  constructor(
    readonly channel: Channel,
    readonly opts: IncomingOptions,
    readonly ready: Prepared | null,
    readonly setState: (s: DestinationState) => void,
    readonly log: Logger,
    /** The TLS session's key; null on a plain link (HELLO carries the key). */
    readonly linkKey: Buffer | null = null,
  ) {}

  get pages(): number {
    return this.memory.pages;
  }

  /** Wakes a phase waiting on the receiver. */
  notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /**
   * Resolves once cond holds, checked after every frame and every 50 ms (the fetch
   * queue moves without frames). Fails at once if the link, the guest's start or the
   * storage failed: the source is waiting on this side.
   */
  async until(cond: () => boolean): Promise<void> {
    while (!cond()) {
      this.throwIfFailed();
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 50);
      });
    }
  }

  throwIfFailed(): void {
    if (this.received.failure) throw this.received.failure;
    if (this.startFailure) throw this.startFailure;
    if (this.queue?.error) throw this.storageFailed();
  }

  storageFailed(): Error {
    return new LivemigError('MIGRATE_STORAGE', `reading the guest's disk failed: ${this.queue.error!.message}`);
  }
}
