/**
 * Referenced pages the destination has not acknowledged yet, kept to answer its
 * re-requests (a reference whose keyed hash did not match there). Referenced pages are
 * numbered in stream order from 0; a batch holds a consecutive range of them. The
 * destination acknowledges cumulatively, so batches leave in order; while more than
 * the limit is kept the source stops reading QEMU's stream (stream.ts).
 */
import { LivemigError } from '../../errors.ts';
import type { BufferPool } from '../../../nbd/index.ts';
import { PAGE_SIZE } from '../../wire/index.ts';
import type { Batch } from './batch.ts';

export class KeptPages {
  private batches: Batch[] = [];
  private head = 0;
  /** Bytes of page buffers kept. */
  bytes = 0;
  /** Referenced pages acknowledged so far. */
  acked = 0;
  /** Referenced pages sent so far (the next one's number). */
  sent = 0;

  constructor(private readonly pool: BufferPool) {}

  /** Numbers the batch's referenced pages and keeps them (a batch without any is let go). */
  add(b: Batch): void {
    b.firstRef = this.sent;
    this.sent += b.refPages;
    if (b.refPages === 0) return this.pool.put(b.data);
    this.batches.push(b);
    this.bytes += b.data.buffer.byteLength;
  }

  /** Every referenced page before `upTo` is written to QEMU at the destination. */
  ack(upTo: number): void {
    if (upTo < this.acked || upTo > this.sent) throw new LivemigError('MIGRATE_PROTOCOL', `QEMU_ACK of ${upTo} pages, with ${this.acked} acknowledged and ${this.sent} sent`);
    this.acked = upTo;
    while (this.head < this.batches.length) {
      const b = this.batches[this.head];
      if (b.firstRef + b.refPages > upTo) break;
      this.bytes -= b.data.buffer.byteLength;
      this.pool.put(b.data);
      this.batches[this.head++] = undefined as unknown as Batch;
    }
    if (this.head > 1024 && this.head * 2 > this.batches.length) {
      this.batches = this.batches.slice(this.head);
      this.head = 0;
    }
  }

  /** The bytes of referenced pages first..first+count-1, for a QEMU_REF_DATA answer. */
  pages(first: number, count: number): Buffer {
    if (first < this.acked || first + count > this.sent) {
      throw new LivemigError('MIGRATE_PROTOCOL', `QEMU_REF_REQUEST for pages ${first}..${first + count - 1}, outside those kept (${this.acked}..${this.sent - 1})`);
    }
    const out = Buffer.allocUnsafe(count * PAGE_SIZE);
    for (let i = 0; i < count; i++) {
      const b = this.find(first + i);
      b.page(b.refIndex[first + i - b.firstRef]).copy(out, i * PAGE_SIZE);
    }
    return out;
  }

  private find(ref: number): Batch {
    let lo = this.head;
    let hi = this.batches.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.batches[mid].firstRef <= ref) lo = mid;
      else hi = mid - 1;
    }
    return this.batches[lo];
  }

  /** Lets every kept buffer go (the migration is over). */
  clear(): void {
    for (let i = this.head; i < this.batches.length; i++) this.pool.put(this.batches[i].data);
    this.batches = [];
    this.head = 0;
    this.bytes = 0;
  }
}
