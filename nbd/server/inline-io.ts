/**
 * Whether a small read or write runs synchronously on the event loop. From the
 * page cache a 4 KiB pread takes a microsecond or two, far less than a
 * thread-pool round trip (two thread wake-ups and four futex calls, the main
 * cost of small requests in `npm run bench -- nbd`); from a disk or NFS it can
 * take milliseconds, and while it waits every other request waits too. So:
 * inline while inline calls rarely make others wait; when they do too much, the
 * thread pool for a while, then inline again. A call with nothing else in
 * flight makes nobody wait, so a lone client (one request at a time) is always
 * served inline, even from a cold cache.
 *
 * The time inline calls took beyond `slowMs` is averaged over the last ~64 calls,
 * each counted up to `capMs`; above `maxAverageWaitMs` (about what a thread-pool
 * round trip costs) the pool is the cheaper path. The cap keeps a call that was
 * merely preempted on a busy machine (a rare, long pause) from tipping the
 * average, while storage that makes most calls wait (a cold disk, NFS) tips it
 * within a few calls. A few misses in a warm cache keep the server inline.
 */
import { performance } from 'node:perf_hooks';

export interface InlineIoOptions {
  /** Largest request run inline (default 64 KiB). */
  maxBytes?: number;
  /** An inline call slower than this waited (default 0.05 ms). */
  slowMs?: number;
  /** The most one call's wait counts for (default 0.5 ms). */
  capMs?: number;
  /** Average wait per inline call above which calls go to the thread pool (default 0.03 ms). */
  maxAverageWaitMs?: number;
  /** How long they go there before inline is tried again (default 250 ms). */
  backoffMs?: number;
}

const WINDOW = 64;

export class InlineIo {
  private readonly maxBytes: number;
  private readonly slowMs: number;
  private readonly capMs: number;
  private readonly maxAverageWaitMs: number;
  private readonly backoffMs: number;
  private asyncUntil = 0;
  private averageWait = 0;
  /** Calls run inline, those that made others wait, and switches to the pool (for tests and status). */
  inlineCalls = 0;
  waits = 0;
  backoffs = 0;

  constructor(opts: InlineIoOptions = {}) {
    this.maxBytes = opts.maxBytes ?? 64 * 1024;
    this.slowMs = opts.slowMs ?? 0.05;
    this.capMs = opts.capMs ?? 0.5;
    this.maxAverageWaitMs = opts.maxAverageWaitMs ?? 0.03;
    this.backoffMs = opts.backoffMs ?? 250;
  }

  /**
   * Runs fn inline and returns true, or returns false if the caller should go
   * asynchronous. `othersInFlight`: other requests were in progress when it started.
   */
  run(length: number, othersInFlight: boolean, fn: () => void): boolean {
    if (length > this.maxBytes) return false;
    const start = performance.now();
    if (othersInFlight && start < this.asyncUntil) return false;
    fn();
    this.inlineCalls++;
    const elapsed = performance.now() - start;
    let waited = 0;
    if (elapsed > this.slowMs && othersInFlight) {
      this.waits++;
      waited = Math.min(elapsed, this.capMs);
    }
    this.averageWait += (waited - this.averageWait) / WINDOW;
    if (this.averageWait > this.maxAverageWaitMs) {
      this.backoffs++;
      this.averageWait = 0;
      this.asyncUntil = start + elapsed + this.backoffMs;
    }
    return true;
  }
}
