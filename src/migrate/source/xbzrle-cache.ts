/**
 * The source's XBZRLE cache: for recently sent pages, the bytes the destination
 * holds now and the sequence number of that version, in a fixed number of
 * 4 KiB slots (`--xbzrle-cache`) evicted least recently used. An entry is
 * exactly what went on the wire, so a delta against it is a delta against the
 * destination's page.
 */
import { PAGE_SIZE } from '../../wire/index.ts';

export class XbzrleCache {
  /** Not zeroed: a slot is written before it is read; the kernel commits pages as slots fill. */
  private readonly data: Buffer;
  private readonly slotSeq: Uint32Array;
  /** Slot by page, in LRU order (a Map keeps insertion order; a touch re-inserts). */
  private readonly slots = new Map<number, number>();
  private readonly free: number[] = [];
  private used = 0;

  constructor(bytes: number) {
    const slots = Math.max(1, Math.floor(bytes / PAGE_SIZE));
    this.data = Buffer.allocUnsafeSlow(slots * PAGE_SIZE);
    this.slotSeq = new Uint32Array(slots);
  }

  get capacity(): number {
    return this.slotSeq.length;
  }

  get size(): number {
    return this.slots.size;
  }

  /** The page's cached slot, made most recently used; -1 when it is not cached. */
  lookup(page: number): number {
    const slot = this.slots.get(page);
    if (slot === undefined) return -1;
    this.slots.delete(page);
    this.slots.set(page, slot);
    return slot;
  }

  bytes(slot: number): Buffer {
    return this.data.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE);
  }

  seq(slot: number): number {
    return this.slotSeq[slot];
  }

  /** Records that the destination now holds `bytes` as version `seq` of the page. */
  put(page: number, bytes: Uint8Array, seq: number): void {
    let slot = this.lookup(page);
    if (slot < 0) slot = this.freeSlot(page);
    this.data.set(bytes, slot * PAGE_SIZE);
    this.slotSeq[slot] = seq;
  }

  /** The page went some other way (zero, reference): its cached copy no longer holds. */
  forget(page: number): void {
    const slot = this.slots.get(page);
    if (slot === undefined) return;
    this.slots.delete(page);
    this.free.push(slot);
  }

  private freeSlot(page: number): number {
    let slot: number;
    if (this.free.length) slot = this.free.pop()!;
    else if (this.used < this.capacity) slot = this.used++;
    else {
      const [oldest, s] = this.slots.entries().next().value as [number, number];
      this.slots.delete(oldest);
      slot = s;
    }
    this.slots.set(page, slot);
    return slot;
  }
}
