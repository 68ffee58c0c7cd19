/**
 * A stretch of QEMU's stream as the source proxy carries it: the stream's pieces in
 * order, where each PAGE record stands in `pieces` as the number p: its 4 KiB are
 * copied into one buffer (`data`, page p at p * 4096) and its header is rebuilt when
 * sent (RAM offset, CONTINUE, or the block's name). The copy makes the pages one
 * buffer the hashing threads can take whole, and keeps the referenced ones for
 * re-requests. After classification a page is sent in full, starts a reference run,
 * or continues one (its header is then left out: the destination rebuilds it).
 */
import { PAGE_SIZE } from '../../wire/index.ts';

/** Pages per batch: 2 MiB of page data, one buffer for the pool and one hashing job. */
export const BATCH_PAGES = 512;

export const PAGE_FULL = 0;
export const PAGE_REF_START = 1;
export const PAGE_REF_NEXT = 2;

export class Batch {
  /** Stream bytes (views) and page numbers, in stream order. */
  readonly pieces: (Buffer | number)[] = [];
  pages = 0;
  /** Bytes of the stream other than page data, in views kept until sent. */
  otherBytes = 0;
  readonly offset = new Float64Array(BATCH_PAGES);
  /** Index in `pieces` of each page's number. */
  readonly piece = new Int32Array(BATCH_PAGES);
  /** The RAM block's name for a page that names it (not CONTINUE), else undefined. */
  readonly blockName: (string | undefined)[] = [];
  readonly kind = new Uint8Array(BATCH_PAGES);
  /** Reference runs in order: first page, page count, first block. */
  runPage: number[] = [];
  runCount: number[] = [];
  runBlock: number[] = [];
  /** 16 bytes of keyed hash per run. */
  hashes: Uint8Array | null = null;
  /** Referenced pages in order (their index in `data`), and the stream-wide number of the first one. */
  refIndex: Uint16Array = new Uint16Array(0);
  firstRef = 0;
  /** Classified and hashed: ready to send. */
  ready: Promise<void> = Promise.resolve();

  constructor(public data: Buffer) {}

  get refPages(): number {
    return this.refIndex.length;
  }

  page(p: number): Buffer {
    return this.data.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
  }

  /** The page data of the pages so far (what the hashing threads get). */
  get used(): Buffer {
    return this.data.subarray(0, this.pages * PAGE_SIZE);
  }
}
