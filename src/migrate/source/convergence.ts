/**
 * When pre-copy stops iterating: the policy, apart from the rounds that feed it.
 * The downtime estimate is what the link still has to carry (at the averaged
 * bandwidth) plus the settling work both sides owe at pause (the destination's
 * fetch backlog and digest hashing, this side's digest hashing). Settling work
 * shrinks while we wait at no cost in link bytes, so fitting the limit is not
 * enough: stop once it is small, or once it has stopped shrinking for a while.
 * A guest that dirties faster than the link carries is throttled step by step
 * (auto-converge) or, with converge 'abort', the migration gives up.
 */
export interface ConvergenceOptions {
  downtimeLimitMs: number;
  maxRounds: number;
  converge: 'throttle' | 'abort';
}

export type Decision =
  | { action: 'stop' }
  /** Only the settling work is behind: wait this long, then send what got dirty. */
  | { action: 'settle'; waitMs: number }
  | { action: 'iterate'; throttle: number }
  /** Rounds exhausted with converge 'abort'. */
  | { action: 'abort' };

/** Rounds of waiting on settling work before they count as slow rounds anyway. */
const MAX_SETTLE_ROUNDS = 10_000;

export class Convergence {
  private slowRounds = 0;
  private lastSettleMs = Infinity;
  private stalledSince: number | null = null;
  throttle = 0;

  constructor(private readonly o: ConvergenceOptions) {}

  /** After round `round`: what next, given the link time and the settling time the estimate holds. */
  next(round: number, linkMs: number, settleMs: number, now = performance.now()): Decision {
    const limit = this.o.downtimeLimitMs;
    const fits = linkMs + settleMs <= limit;
    if (!fits || settleMs < this.lastSettleMs) this.stalledSince = null;
    else this.stalledSince ??= now;
    this.lastSettleMs = settleMs;
    if (fits && (settleMs <= limit / 4 || now - (this.stalledSince ?? Infinity) > 4 * limit)) return { action: 'stop' };
    if (linkMs <= limit && round < MAX_SETTLE_ROUNDS) return { action: 'settle', waitMs: Math.min(100, Math.max(10, settleMs / 4)) };
    this.slowRounds++;
    if (this.slowRounds >= this.o.maxRounds) return this.o.converge === 'abort' ? { action: 'abort' } : { action: 'stop' };
    if (this.o.converge === 'throttle' && this.slowRounds >= 2) this.throttle = Math.min(99, this.throttle ? this.throttle + 10 : 20);
    return { action: 'iterate', throttle: this.throttle };
  }
}
