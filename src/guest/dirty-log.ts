/**
 * The dirty log shared by guest and engine, as KVM_GET_DIRTY_LOG works: the guest
 * sets a page's bit on every memory write; the engine reads and clears it
 * atomically word by word, so no write between the two is ever lost.
 */
export class DirtyLog {
  readonly bits: Int32Array;

  constructor(readonly pages: number, buffer?: SharedArrayBuffer) {
    this.bits = new Int32Array(buffer ?? new SharedArrayBuffer(Math.ceil(pages / 32) * 4));
  }

  get buffer(): SharedArrayBuffer {
    return this.bits.buffer as SharedArrayBuffer;
  }

  mark(page: number): void {
    Atomics.or(this.bits, page >>> 5, 1 << (page & 31));
  }

  isDirty(page: number): boolean {
    return (Atomics.load(this.bits, page >>> 5) & (1 << (page & 31))) !== 0;
  }

  /** Returns the dirty pages in ascending order and clears them. */
  readAndClear(): Uint32Array {
    const out: number[] = [];
    for (let w = 0; w < this.bits.length; w++) {
      if (this.bits[w] === 0) continue; // a plain read is enough to skip clean words
      let word = Atomics.exchange(this.bits, w, 0);
      while (word !== 0) {
        const bit = 31 - Math.clz32(word & -word);
        out.push(w * 32 + bit);
        word &= word - 1;
      }
    }
    return Uint32Array.from(out);
  }

  /** Clears these pages' bits; returns the pages whose bit was set. */
  takePages(pages: ArrayLike<number>): Uint32Array {
    const out: number[] = [];
    for (let i = 0; i < pages.length; i++) {
      const bit = 1 << (pages[i] & 31);
      if (Atomics.and(this.bits, pages[i] >>> 5, ~bit) & bit) out.push(pages[i]);
    }
    return Uint32Array.from(out);
  }

  /** Marks every page, as at the start of a migration's first round. */
  markAll(): void {
    this.bits.fill(-1);
    const tail = this.pages % 32;
    if (tail) this.bits[this.bits.length - 1] = (1 << tail) - 1;
  }

  count(): number {
    let n = 0;
    for (let w = 0; w < this.bits.length; w++) {
      let v = this.bits[w];
      while (v) {
        v &= v - 1;
        n++;
      }
    }
    return n;
  }
}
