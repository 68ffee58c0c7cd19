/** Read-only queries over a content index database (for the `p2b` tool; safe while the server runs). */
import type Database from 'better-sqlite3';
import { openIndexDatabase, readMeta, type CindexMeta } from './store.ts';
import { hashToHex } from './fast-hash.ts';

export interface CindexRow {
  hash: string;
  block: number;
}

export interface CindexStats {
  kind: 'content-index';
  export: string;
  image: string | null;
  hash: string;
  entries: number;
  capacity: number;
  fill: number;
  clean: boolean;
  createdAt: string;
  counters: Record<string, number>;
}

type RawRow = [number, number, number];
const toRow = ([hi, lo, block]: RawRow): CindexRow => ({ hash: hashToHex(hi, lo), block });

export class ContentIndexReader {
  readonly meta: CindexMeta;
  private constructor(readonly db: Database.Database, readonly path: string) {
    this.meta = readMeta(db);
  }

  static open(path: string): ContentIndexReader {
    return new ContentIndexReader(openIndexDatabase(path), path);
  }

  stats(): CindexStats {
    const entries = (this.db.prepare('SELECT count(*) AS n FROM entry').get() as { n: number }).n;
    const counters = Object.fromEntries((this.db.prepare('SELECT name, value FROM counter').all() as { name: string; value: number }[]).map((r) => [r.name, r.value]));
    const m = this.meta;
    return {
      kind: 'content-index', export: m.export, image: m.image, hash: m.hash, entries, capacity: m.capacity,
      fill: Math.round((entries / m.capacity) * 10000) / 10000, clean: m.clean, createdAt: m.createdAt, counters,
    };
  }

  /** Every entry, by block. */
  *rows(): IterableIterator<CindexRow> {
    for (const r of this.db.prepare('SELECT hash_hi, hash_lo, block FROM entry ORDER BY block').raw().iterate() as IterableIterator<RawRow>) yield toRow(r);
  }

  byHash(hi: number, lo: number): CindexRow[] {
    return (this.db.prepare('SELECT hash_hi, hash_lo, block FROM entry WHERE hash_hi = ? AND hash_lo = ?').raw().all(hi, lo) as RawRow[]).map(toRow);
  }

  byBlock(block: number): CindexRow[] {
    return (this.db.prepare('SELECT hash_hi, hash_lo, block FROM entry WHERE block = ?').raw().all(block) as RawRow[]).map(toRow);
  }

  close(): void {
    this.db.close();
  }
}
