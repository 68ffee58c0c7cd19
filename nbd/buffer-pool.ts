/**
 * Reuses large I/O buffers. A fresh 1 MiB Buffer per request costs page faults
 * and GC work that showed up as a large share of server time in `npm run bench -- nbd`.
 * Buffers are kept per power-of-two size class; small requests bypass the pool.
 */
/** Requests from this size on get pooled buffers, each the whole of its own ArrayBuffer. */
export const MIN_POOLED = 64 * 1024;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  /** Keeps up to `perClass` buffers of each size, and no more than `bytesPerClass` bytes of each. */
  constructor(private readonly perClass = 64, private readonly bytesPerClass = Infinity) {}

  /** A buffer of exactly `length` bytes (a view of a pooled buffer), contents undefined. */
  get(length: number): Buffer {
    if (length < MIN_POOLED) return Buffer.allocUnsafe(length);
    const cls = sizeClass(length);
    const buf = this.free.get(cls)?.pop() ?? Buffer.allocUnsafeSlow(cls);
    return buf.subarray(0, length);
  }

  /** Returns a buffer from get(); the caller must not touch it afterwards. */
  put(view: Buffer): void {
    if (view.length < MIN_POOLED) return;
    const whole = Buffer.from(view.buffer, view.byteOffset, view.buffer.byteLength - view.byteOffset);
    if (view.byteOffset !== 0 || whole.length !== sizeClass(whole.length)) return; // not ours
    const list = this.free.get(whole.length) ?? [];
    if (list.length < this.perClass && (list.length + 1) * whole.length <= this.bytesPerClass) list.push(whole);
    this.free.set(whole.length, list);
  }
}

function sizeClass(n: number): number {
  return 2 ** Math.ceil(Math.log2(n));
}
