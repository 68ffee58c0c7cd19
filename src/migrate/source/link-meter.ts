/**
 * What the link carries when it is what limits the sender: frame by frame, the
 * share of the sending time spent waiting for the rate limit or the socket to
 * drain; the rate of the frames that waited most of their time is the link's.
 * It is remembered while compression makes the sender busier and the waiting
 * stops, so that the decision does not flap.
 */
const WEIGHT = 0.1;
/** A frame that waited more than this share of its time went at the link's pace. */
const BOUND_SHARE = 0.25;

export class LinkMeter {
  private last = 0;
  /** Bytes per second of the frames that went at the link's pace (0: none yet). */
  boundRate = 0;

  /** A burst of sending starts (a round, or the pages asked for): the gap before it is not sending time. */
  start(): void {
    this.last = performance.now();
  }

  /** One frame went: its bytes, and how long the send waited on the rate limit or the socket. */
  sent(bytes: number, waitMs: number): void {
    const now = performance.now();
    const ms = Math.max(now - this.last, 1e-3);
    this.last = now;
    if (waitMs / ms <= BOUND_SHARE) return;
    const rate = (bytes / ms) * 1000;
    this.boundRate = this.boundRate ? this.boundRate + WEIGHT * (rate - this.boundRate) : rate;
  }
}
