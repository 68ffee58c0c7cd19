/**
 * Bandwidth measured per round and averaged over the last rounds (by bytes over
 * time, not the mean of rates), so one short or bursty round does not swing the
 * downtime estimate: QEMU's roadmap item, seeds/004.
 */
export class BandwidthMeter {
  private readonly rounds: { bytes: number; ms: number }[] = [];
  constructor(private readonly window = 3) {}

  record(bytes: number, ms: number): void {
    this.rounds.push({ bytes, ms: Math.max(ms, 0.001) });
  }

  /** Bytes per second over the last `window` rounds. */
  average(): number {
    const last = this.rounds.slice(-this.window);
    const bytes = last.reduce((a, r) => a + r.bytes, 0);
    const ms = last.reduce((a, r) => a + r.ms, 0);
    return ms > 0 ? (bytes / ms) * 1000 : 0;
  }

  /** Milliseconds to send `bytes` at the averaged bandwidth. */
  estimateMs(bytes: number): number {
    const bw = this.average();
    return bw > 0 ? (bytes / bw) * 1000 : Infinity;
  }
}
