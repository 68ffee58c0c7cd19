/**
 * Bytes of request data a server holds at once, across all its connections:
 * read buffers until the reply is in the kernel, write payloads until written.
 * Untrusted clients decide request sizes, so this, not their number, bounds memory.
 * A request larger than the whole budget runs alone.
 */
export class ByteBudget {
  private used = 0;
  private readonly waiters: { bytes: number; resolve: () => void }[] = [];
  /** Highest `inUse` seen (for tests and status). */
  peak = 0;

  constructor(readonly limit: number) {}

  get inUse(): number {
    return this.used;
  }

  /** Resolves once `bytes` are granted; grants go in request order. */
  take(bytes: number): Promise<void> | undefined {
    if (this.waiters.length === 0 && this.fits(bytes)) {
      this.grant(bytes);
      return undefined; // no promise on the fast path
    }
    return new Promise((resolve) => this.waiters.push({ bytes, resolve }));
  }

  give(bytes: number): void {
    this.used -= bytes;
    while (this.waiters.length > 0 && this.fits(this.waiters[0].bytes)) {
      const w = this.waiters.shift()!;
      this.grant(w.bytes);
      w.resolve();
    }
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.limit;
  }

  private grant(bytes: number): void {
    this.used += bytes;
    if (this.used > this.peak) this.peak = this.used;
  }
}
