/**
 * A run of referenced pages on its way to QEMU, laid out as QEMU's stream has it:
 * page 0's data, then for each next page its 8-byte header (RAM offset | PAGE |
 * CONTINUE, which the source left out) and its data. Pages land as the fetch queue
 * verifies them, or in full from the source after a failed check; once all have,
 * the run is written to QEMU as one buffer.
 */
import { PAGE_SIZE, QEMU_RUN_PAGE_FLAGS } from '../../wire/index.ts';

const STRIDE = PAGE_SIZE + 8;

/** The stream bytes of a run of `count` pages after its first page's header. */
export function runBytes(count: number): number {
  return count * STRIDE - 8;
}

export class RefRun {
  private readonly filled: Uint8Array;
  missing: number;

  constructor(readonly first: number, readonly count: number, readonly offset: number, readonly buf: Buffer) {
    this.filled = new Uint8Array(count);
    this.missing = count;
    for (let i = 1; i < count; i++) {
      const v = offset + i * PAGE_SIZE + QEMU_RUN_PAGE_FLAGS;
      buf.writeUInt32BE(Math.floor(v / 2 ** 32), i * STRIDE - 8);
      buf.writeUInt32BE(v >>> 0, i * STRIDE - 4);
    }
  }

  get ready(): boolean {
    return this.missing === 0;
  }

  /** Lands page i (once; a second copy of a page is ignored). Returns whether the run just became ready. */
  fill(i: number, bytes: Uint8Array): boolean {
    if (this.filled[i]) return false;
    this.filled[i] = 1;
    this.buf.set(bytes, i * STRIDE);
    return --this.missing === 0;
  }
}
