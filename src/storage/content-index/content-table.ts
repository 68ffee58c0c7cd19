/**
 * The content index in memory: 64-bit content hash -> block, bounded. Typed arrays
 * only (the p2b block index's style): entries live in parallel arrays indexed by an
 * entry id; two open-addressing tables (linear probing, backward-shift deletion)
 * hold id+1 (0 = empty), one keyed by hash for lookups, one keyed by block so a
 * write can drop its block's entry. One hash maps to one block and one block to
 * one hash: a newer block with the same content replaces the older.
 * Full: the clock hand evicts the first entry not looked up or re-read since the
 * hand last passed (an LRU approximation with one bit per entry).
 * Memory: 12 B of entry + 1 B clock bit + 4 B free list + 2 x 4 B / 0.7 load of
 * tables + 1 bit changed = about 28.5 B per entry of capacity (114 MiB for 4 M).
 */
export const NO_BLOCK = 0xffffffff;
const MAX_LOAD = 0.7;
const NONE = -1;

export const CINDEX_COUNTER = {
  recordedByRead: 0,
  recordedByWrite: 1,
  droppedByWrite: 2, // a write, trim or zero-write touched the block
  droppedByChange: 3, // the block read back with other content (someone wrote it behind us)
  evicted: 4,
  raced: 5, // blocks not recorded because a write overlapped their read or write
  lookups: 6,
  hits: 7,
  rereads: 8, // blocks read again while their entry stood: not hashed again
} as const;
export type CindexCounterName = keyof typeof CINDEX_COUNTER;

export class ContentTable {
  private readonly hashHi: Uint32Array;
  private readonly hashLo: Uint32Array;
  private readonly blockOf: Uint32Array;
  private readonly ref: Uint8Array;
  private readonly byHash: Int32Array;
  private readonly byBlock: Int32Array;
  private readonly slots: number;
  private readonly scale: number;
  private readonly free: Int32Array;
  private freeTop = 0;
  private fresh = 0; // ids from here on were never used
  private hand = 0;
  size = 0;
  /** One bit per entry id whose entry changed since the persister last looked. */
  readonly changed: Int32Array;
  readonly counters = new Float64Array(Object.keys(CINDEX_COUNTER).length);

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > 2 ** 30) {
      throw new RangeError(`content index capacity must be 1..2^30 entries, got ${capacity}`);
    }
    this.hashHi = new Uint32Array(capacity);
    this.hashLo = new Uint32Array(capacity);
    this.blockOf = new Uint32Array(capacity).fill(NO_BLOCK);
    this.ref = new Uint8Array(capacity);
    this.free = new Int32Array(capacity);
    this.slots = Math.max(8, Math.ceil(capacity / MAX_LOAD));
    this.scale = this.slots / 2 ** 32;
    this.byHash = new Int32Array(this.slots);
    this.byBlock = new Int32Array(this.slots);
    this.changed = new Int32Array(Math.ceil(capacity / 32));
  }

  /** Bytes held by the arrays. */
  get bytes(): number {
    return this.capacity * (4 + 4 + 4 + 1 + 4) + this.slots * 8 + this.changed.byteLength;
  }

  count(name: CindexCounterName): number {
    return this.counters[CINDEX_COUNTER[name]];
  }

  /** The block last seen holding this content, or -1; a hit keeps the entry from eviction a while. */
  lookup(hi: number, lo: number): number {
    this.counters[CINDEX_COUNTER.lookups]++;
    const slot = this.slotOfHash(hi, lo);
    if (slot === NONE) return -1;
    const id = this.byHash[slot] - 1;
    this.ref[id] = 1;
    this.counters[CINDEX_COUNTER.hits]++;
    return this.blockOf[id];
  }

  /** The hash recorded for a block as [hi, lo], or null (inspection and tests). */
  hashOfBlock(block: number): [number, number] | null {
    const slot = this.slotOfBlock(block);
    if (slot === NONE) return null;
    const id = this.byBlock[slot] - 1;
    return [this.hashHi[id], this.hashLo[id]];
  }

  /** Whether the block has an entry; a hit keeps it from eviction a while, as a re-read would. */
  touchBlock(block: number): boolean {
    const slot = this.slotOfBlock(block);
    if (slot === NONE) return false;
    this.ref[this.byBlock[slot] - 1] = 1;
    return true;
  }

  /** The block holds this content now (seen by a completed read or write). */
  record(block: number, hi: number, lo: number, byWrite: boolean): void {
    if (block >= NO_BLOCK) return; // past 16 TiB: not indexed
    const bs = this.slotOfBlock(block);
    if (bs !== NONE) {
      const id = this.byBlock[bs] - 1;
      if (this.hashHi[id] === hi && this.hashLo[id] === lo) return void (this.ref[id] = 1);
      this.remove(id);
      this.counters[CINDEX_COUNTER.droppedByChange]++;
    }
    const hs = this.slotOfHash(hi, lo);
    if (hs !== NONE) this.remove(this.byHash[hs] - 1); // same content elsewhere: the newest block wins
    const id = this.allocate();
    this.hashHi[id] = hi;
    this.hashLo[id] = lo;
    this.blockOf[id] = block;
    this.ref[id] = 1;
    this.insertSlot(this.byHash, this.hashIdeal(lo), id);
    this.insertSlot(this.byBlock, this.blockIdeal(block), id);
    this.size++;
    this.touch(id);
    this.counters[byWrite ? CINDEX_COUNTER.recordedByWrite : CINDEX_COUNTER.recordedByRead]++;
  }

  /** The block is changing or changed: forget what it held. Returns true if it had an entry. */
  dropBlock(block: number, counter: CindexCounterName = 'droppedByWrite'): boolean {
    const slot = this.slotOfBlock(block);
    if (slot === NONE) return false;
    this.remove(this.byBlock[slot] - 1);
    this.counters[CINDEX_COUNTER[counter]]++;
    return true;
  }

  /** The entry at an id as [hi, lo, block], or null when the id is free (persister). */
  entry(id: number): [number, number, number] | null {
    const b = this.blockOf[id];
    return b === NO_BLOCK ? null : [this.hashHi[id], this.hashLo[id], b];
  }

  /** Puts a stored entry back at its id (loading); call finishRestore() after the last. */
  restore(id: number, hi: number, lo: number, block: number): boolean {
    if (id < 0 || id >= this.capacity || block >= NO_BLOCK || this.blockOf[id] !== NO_BLOCK) return false;
    if (this.slotOfBlock(block) !== NONE || this.slotOfHash(hi, lo) !== NONE) return false;
    this.hashHi[id] = hi;
    this.hashLo[id] = lo;
    this.blockOf[id] = block;
    this.insertSlot(this.byHash, this.hashIdeal(lo), id);
    this.insertSlot(this.byBlock, this.blockIdeal(block), id);
    this.size++;
    return true;
  }

  /** After restore(): every id left empty becomes free (lowest handed out first). */
  finishRestore(): void {
    this.freeTop = 0;
    for (let id = this.capacity - 1; id >= 0; id--) if (this.blockOf[id] === NO_BLOCK) this.free[this.freeTop++] = id;
    this.fresh = this.capacity;
  }

  // ---- internals ----

  private allocate(): number {
    if (this.freeTop > 0) return this.free[--this.freeTop];
    if (this.fresh < this.capacity) return this.fresh++;
    // Full: every id holds an entry, so one sweep clears every bit and the next finds a victim.
    for (;;) {
      const id = this.hand;
      this.hand = id + 1 === this.capacity ? 0 : id + 1;
      if (this.ref[id]) {
        this.ref[id] = 0;
        continue;
      }
      this.remove(id);
      this.counters[CINDEX_COUNTER.evicted]++;
      return this.free[--this.freeTop];
    }
  }

  private remove(id: number): void {
    this.deleteSlot(this.byHash, this.slotOfHash(this.hashHi[id], this.hashLo[id]), true);
    this.deleteSlot(this.byBlock, this.slotOfBlock(this.blockOf[id]), false);
    this.blockOf[id] = NO_BLOCK;
    this.ref[id] = 0;
    this.free[this.freeTop++] = id;
    this.size--;
    this.touch(id);
  }

  private touch(id: number): void {
    this.changed[id >>> 5] |= 1 << (id & 31);
  }

  private hashIdeal(lo: number): number {
    return Math.floor(lo * this.scale); // the hash is uniform already: its low half picks the slot
  }

  private blockIdeal(block: number): number {
    return Math.floor((Math.imul(block, 0x9e3779b1) >>> 0) * this.scale);
  }

  private slotOfHash(hi: number, lo: number): number {
    const t = this.byHash;
    for (let i = this.hashIdeal(lo); ; i = i + 1 === this.slots ? 0 : i + 1) {
      const e = t[i];
      if (e === 0) return NONE;
      if (this.hashLo[e - 1] === lo && this.hashHi[e - 1] === hi) return i;
    }
  }

  private slotOfBlock(block: number): number {
    const t = this.byBlock;
    for (let i = this.blockIdeal(block); ; i = i + 1 === this.slots ? 0 : i + 1) {
      const e = t[i];
      if (e === 0) return NONE;
      if (this.blockOf[e - 1] === block) return i;
    }
  }

  private insertSlot(t: Int32Array, ideal: number, id: number): void {
    let i = ideal;
    while (t[i] !== 0) i = i + 1 === this.slots ? 0 : i + 1;
    t[i] = id + 1;
  }

  private deleteSlot(t: Int32Array, hole: number, byHash: boolean): void {
    let i = hole;
    for (let j = i + 1 === this.slots ? 0 : i + 1; t[j] !== 0; j = j + 1 === this.slots ? 0 : j + 1) {
      const id = t[j] - 1;
      const k = byHash ? this.hashIdeal(this.hashLo[id]) : this.blockIdeal(this.blockOf[id]);
      // Move j back into the hole unless its ideal slot lies cyclically in (i, j].
      const inRange = i <= j ? k > i && k <= j : k > i || k <= j;
      if (!inRange) {
        t[i] = t[j];
        i = j;
      }
    }
    t[i] = 0;
  }
}
