/**
 * The content-index filter: an NBD export backend over another one (nbdkit's
 * filter idea: same interface, same argument order) that keeps a content hash ->
 * block index of what the export's blocks hold, for the QEMU stream proxy to
 * turn guest pages into block references. Only whole 4 KiB-aligned blocks count.
 *
 * The rule: an entry H -> b may be stale only through a write this server did not
 * see (another writer on the image, or a reload after one: see content-index.ts);
 * an entry never survives a completed write, trim or zero-write of its block
 * through this server. Lookups are hints: the destination checks every reference
 * with a keyed cryptographic hash, so a stale entry costs a retry, never a wrong page.
 *  - A write, trim or zero-write drops the entries of every block it touches when it
 *    starts (the block's content is in flux from then on).
 *  - A completed read records H(block) -> b for each whole block, unless a write of
 *    that block was in flight at any time during the read (the read may have seen
 *    either version, as in the interceptor's p2b rule): such blocks are skipped.
 *  - A completed write records the written content of each whole block, unless
 *    another write of that block overlapped it (the server's ordering decides which
 *    landed). Partial blocks, trims and zero-writes record nothing.
 *  - Zero blocks are never recorded (a zero page travels as ZERO anyway).
 *  - A read of a block that has an entry does not hash it again: the entry stands
 *    until a write through this server drops it, so its content is known. (Hashing
 *    every re-read cost the storage host a core's fraction while a destination proxy
 *    read a migration's references; a writer behind the server's back is caught by
 *    the keyed hash, as for any stale entry.)
 * Why no entry can survive a completed write W of b: W dropped b's entry when it
 * started; while W is in flight every read or write overlapping b is marked raced,
 * so nothing records b; so after W only W's own record (or nothing) holds b.
 */
import type { ExportBackend } from '../../../nbd/index.ts';
import { BLOCK_SIZE, type BlockHasher } from './fast-hash.ts';
import { CINDEX_COUNTER, type ContentTable } from './content-table.ts';

interface IoInFlight {
  /** Blocks [first, end): whole blocks for a read, touched blocks for a write. */
  first: number;
  end: number;
  /** Block ranges [from, to) flattened, that a write touched while this was in flight. */
  raced: number[] | null;
}

function markOverlap(target: IoInFlight, other: IoInFlight): void {
  const from = Math.max(target.first, other.first);
  const to = Math.min(target.end, other.end);
  if (from < to) (target.raced ??= []).push(from, to);
}

function raced(op: IoInFlight, block: number): boolean {
  const r = op.raced;
  if (!r) return false;
  for (let i = 0; i < r.length; i += 2) if (block >= r[i] && block < r[i + 1]) return true;
  return false;
}

export class ContentIndexFilter implements ExportBackend {
  private readonly reads = new Set<IoInFlight>();
  private readonly writes = new Set<IoInFlight>();

  constructor(readonly inner: ExportBackend, readonly table: ContentTable, readonly hasher: BlockHasher) {}

  get size(): number { return this.inner.size; }
  get description(): string { return this.inner.description; }
  get readOnly(): boolean { return this.inner.readOnly; }

  async read(target: Buffer, offset: number): Promise<void> {
    const first = Math.ceil(offset / BLOCK_SIZE);
    const end = Math.floor((offset + target.length) / BLOCK_SIZE);
    if (first >= end) return this.inner.read(target, offset); // no whole block: nothing to learn
    const op: IoInFlight = { first, end, raced: null };
    for (const w of this.writes) markOverlap(op, w);
    this.reads.add(op);
    try {
      await this.inner.read(target, offset);
    } finally {
      this.reads.delete(op);
    }
    this.recordBlocks(op, target, offset, false);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    const op = this.beginChange(offset, data.length);
    try {
      await this.inner.write(data, offset);
    } finally {
      this.writes.delete(op);
    }
    const first = Math.ceil(offset / BLOCK_SIZE);
    const end = Math.floor((offset + data.length) / BLOCK_SIZE);
    if (first < end) this.recordBlocks({ first, end, raced: op.raced }, data, offset, true);
  }

  async trim(offset: number, length: number): Promise<void> {
    const op = this.beginChange(offset, length);
    try {
      await this.inner.trim(offset, length);
    } finally {
      this.writes.delete(op);
    }
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    const op = this.beginChange(offset, length);
    try {
      await this.inner.writeZeroes(offset, length);
    } finally {
      this.writes.delete(op);
    }
  }

  flush(): Promise<void> { return this.inner.flush(); }
  close(): Promise<void> { return this.inner.close(); }

  /** True while reads or writes are in flight through the filter (tests, shutdown). */
  get busy(): boolean {
    return this.reads.size > 0 || this.writes.size > 0;
  }

  /** Drops the touched blocks' entries and marks every overlapping operation in flight as raced. */
  private beginChange(offset: number, length: number): IoInFlight {
    const op: IoInFlight = { first: Math.floor(offset / BLOCK_SIZE), end: Math.ceil((offset + length) / BLOCK_SIZE), raced: null };
    for (let b = op.first; b < op.end; b++) this.table.dropBlock(b);
    for (const w of this.writes) {
      markOverlap(op, w);
      markOverlap(w, op);
    }
    for (const r of this.reads) markOverlap(r, op);
    this.writes.add(op);
    return op;
  }

  /** Hashes each whole block of `data` (which starts at byte `offset`) in op's range and records it. */
  private recordBlocks(op: IoInFlight, data: Buffer, offset: number, byWrite: boolean): void {
    const h = this.hasher;
    for (let b = op.first; b < op.end; b++) {
      if (raced(op, b)) {
        this.table.counters[CINDEX_COUNTER.raced]++;
        continue;
      }
      if (!byWrite && this.table.touchBlock(b)) {
        this.table.counters[CINDEX_COUNTER.rereads]++;
        continue;
      }
      const at = b * BLOCK_SIZE - offset;
      h.hash(data.subarray(at, at + BLOCK_SIZE));
      if (h.lastIsZero) this.table.dropBlock(b, 'droppedByChange');
      else this.table.record(b, h.hi, h.lo, byWrite);
    }
  }
}
