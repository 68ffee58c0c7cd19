/** A token bucket over bytes (like QEMU's max-bandwidth): a burst of 10 ms, then the set rate. */
import { setTimeout as delay } from 'node:timers/promises';

export class RateLimit {
  private tokens: number;
  private last = performance.now();
  private readonly burst: number;

  /** bytesPerSecond 0 means unlimited. */
  constructor(readonly bytesPerSecond: number) {
    this.burst = Math.max(256 * 1024, bytesPerSecond / 100);
    this.tokens = this.burst;
  }

  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.bytesPerSecond <= 0) return;
    for (;;) {
      const now = performance.now();
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
      this.last = now;
      // A send larger than the burst goes once the bucket is full, leaving it in debt.
      if (this.tokens >= Math.min(bytes, this.burst)) {
        this.tokens -= bytes;
        return;
      }
      const waitMs = ((Math.min(bytes, this.burst) - this.tokens) / this.bytesPerSecond) * 1000;
      await delay(Math.max(1, waitMs), undefined, { signal });
    }
  }
}
