/**
 * block → pages mapped to it, in typed arrays only (a JS Map of 2 M entries was
 * the map's bottleneck in `npm run bench -- p2b`). An open-addressing hash table
 * (linear probing, backward-shift deletion) holds each block's first page, key
 * and value side by side so a probe touches one cache line; pages of the same
 * block are chained through per-page next/prev links.
 */
const EMPTY = 0xffffffff;
const NONE = -1;

export class BlockIndex {
  /** slot i: [2i] the block (EMPTY if free), [2i+1] its first page. */
  private readonly slots: Uint32Array;
  private readonly mask: number;
  private readonly shift: number;
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  size = 0;

  constructor(pages: number) {
    const capacity = 2 ** Math.max(4, Math.ceil(Math.log2(pages * 2)));
    this.slots = new Uint32Array(capacity * 2).fill(EMPTY);
    this.mask = capacity - 1;
    this.shift = 32 - Math.log2(capacity);
    this.next = new Int32Array(pages).fill(NONE);
    this.prev = new Int32Array(pages).fill(NONE);
  }

  private ideal(block: number): number {
    return Math.imul(block, 0x9e3779b1) >>> this.shift;
  }

  private slotOf(block: number): number {
    for (let i = this.ideal(block); ; i = (i + 1) & this.mask) {
      const k = this.slots[2 * i];
      if (k === block) return i;
      if (k === EMPTY) return NONE;
    }
  }

  add(block: number, page: number): void {
    const s = this.slots;
    let i = this.ideal(block);
    while (s[2 * i] !== EMPTY && s[2 * i] !== block) i = (i + 1) & this.mask;
    this.prev[page] = NONE;
    if (s[2 * i] === block) {
      const head = s[2 * i + 1];
      this.next[page] = head;
      this.prev[head] = page;
    } else {
      s[2 * i] = block;
      this.next[page] = NONE;
      this.size++;
    }
    s[2 * i + 1] = page;
  }

  remove(block: number, page: number): void {
    const before = this.prev[page];
    const after = this.next[page];
    if (after !== NONE) this.prev[after] = before;
    if (before !== NONE) this.next[before] = after;
    else {
      const slot = this.slotOf(block);
      if (slot === NONE) return;
      if (after !== NONE) this.slots[2 * slot + 1] = after;
      else this.deleteSlot(slot);
    }
    this.next[page] = this.prev[page] = NONE;
  }

  /** The first page mapped to block, or -1. Walk on with after(page); read after() before removing a page. */
  first(block: number): number {
    const slot = this.slotOf(block);
    return slot === NONE ? NONE : this.slots[2 * slot + 1];
  }

  after(page: number): number {
    return this.next[page];
  }

  /** Calls fn for each page mapped to block (fn may remove that page). */
  forEach(block: number, fn: (page: number) => void): void {
    const slot = this.slotOf(block);
    if (slot === NONE) return;
    for (let p = this.slots[2 * slot + 1] as number; p !== NONE; ) {
      const n = this.next[p];
      fn(p);
      p = n;
    }
  }

  private deleteSlot(hole: number): void {
    this.size--;
    const s = this.slots;
    let i = hole;
    for (let j = (i + 1) & this.mask; s[2 * j] !== EMPTY; j = (j + 1) & this.mask) {
      const k = this.ideal(s[2 * j]);
      // Move j back into the hole unless its ideal slot lies cyclically in (i, j].
      const inRange = i <= j ? k > i && k <= j : k > i || k <= j;
      if (!inRange) {
        s[2 * i] = s[2 * j];
        s[2 * i + 1] = s[2 * j + 1];
        i = j;
      }
    }
    s[2 * i] = EMPTY;
  }
}
