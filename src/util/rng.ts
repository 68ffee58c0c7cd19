/**
 * A small seeded PRNG (xoshiro128**) whose whole state is four integers, so a
 * workload's generator can be saved with the device state and resumed exactly.
 */
export class Rng {
  private s: Uint32Array;

  constructor(seedOrState: number | number[]) {
    if (Array.isArray(seedOrState)) {
      this.s = Uint32Array.from(seedOrState);
      return;
    }
    // splitmix32 expands the seed so that nearby seeds give unrelated streams.
    let x = seedOrState >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s = Uint32Array.of(next(), next(), next(), next());
  }

  state(): number[] {
    return [...this.s];
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** A float in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** Fills a buffer with pseudo-random bytes (fast: 4 bytes per draw). */
  fill(target: Uint8Array): void {
    const words = target.length >> 2;
    const view = new DataView(target.buffer, target.byteOffset, target.byteLength);
    for (let i = 0; i < words; i++) view.setUint32(i * 4, this.u32(), true);
    for (let i = words * 4; i < target.length; i++) target[i] = this.u32() & 0xff;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * Zipf-distributed ranks in [0, n) with exponent s, by inverting a precomputed
 * cumulative table (n is at most a few hundred thousand files).
 */
export class Zipf {
  private readonly cdf: Float64Array;
  constructor(readonly n: number, s = 1.0) {
    this.cdf = new Float64Array(n);
    let sum = 0;
    for (let i = 0; i < n; i++) this.cdf[i] = sum += 1 / Math.pow(i + 1, s);
    for (let i = 0; i < n; i++) this.cdf[i] /= sum;
  }
  sample(rng: Rng): number {
    const u = rng.float();
    let lo = 0;
    let hi = this.n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
