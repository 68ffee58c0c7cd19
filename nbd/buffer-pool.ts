/**
 * Reuses large I/O buffers. A fresh 1 MiB Buffer per request costs page faults
 * and GC work that showed up as a large share of server time in `npm run bench -- nbd`.
 * Buffers are kept per power-of-two size class; small requests bypass the pool.
 */
/** Requests from this size on get pooled buffers, each the whole of its own ArrayBuffer. */
export const MIN_POOLED = 64 * 1024;

/** Buffers below this come from Node's shared slab and must never enter a pool. */
const SLAB_LIMIT = Buffer.poolSize >>> 1;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private readonly minPooled: number;
  /**
   * Keeps up to `perClass` buffers of each size, and no more than `bytesPerClass`
   * bytes of each; requests from `minPooled` bytes on are pooled (at least 4 KiB).
   */
  constructor(private readonly perClass = 64, private readonly bytesPerClass = Infinity, minPooled = MIN_POOLED) {
    this.minPooled = Math.max(minPooled, SLAB_LIMIT);
  }

  /** A buffer of exactly `length` bytes (a view of a pooled buffer), contents undefined. */
  get(length: number): Buffer {
    if (length < this.minPooled) return Buffer.allocUnsafe(length);
    const cls = sizeClass(length);
    const buf = this.free.get(cls)?.pop() ?? Buffer.allocUnsafeSlow(cls);
    return buf.subarray(0, length);
  }

  /** Returns a buffer from get(); the caller must not touch it afterwards. */
  put(view: Buffer): void {
    if (view.length < this.minPooled) return;
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
