/**
 * Whether the link is what limits the sender, frame by frame: the share of the
 * sending time spent waiting for the rate limit or the socket to drain, and the
 * rate the link carries. Averaged over the last few dozen frames, so a decision
 * follows the link within a round (round 0 is most of the bytes).
 */
const WEIGHT = 0.1;
/** Waiting more than this share of the time means the link, not the sender's CPU, sets the pace. */
const BOUND_SHARE = 0.25;

export class LinkMeter {
  private bytes = 0;
  private ms = 0;
  private waitMs = 0;
  private last = 0;

  /** A burst of sending starts (a round, or the pages asked for): the gap before it is not sending time. */
  start(): void {
    this.last = performance.now();
  }

  /** One frame went: its bytes, and how long the send waited on the rate limit or the socket. */
  sent(bytes: number, waitMs: number): void {
    const now = performance.now();
    const ms = Math.max(now - this.last, 1e-3);
    this.last = now;
    this.bytes += WEIGHT * (bytes - this.bytes);
    this.ms += WEIGHT * (ms - this.ms);
    this.waitMs += WEIGHT * (Math.min(waitMs, ms) - this.waitMs);
  }

  /** Bytes per second the link has carried lately. */
  get rate(): number {
    return this.ms > 0 ? (this.bytes / this.ms) * 1000 : 0;
  }

  get bound(): boolean {
    return this.ms > 0 && this.waitMs / this.ms > BOUND_SHARE;
  }
}
