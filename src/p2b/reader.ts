/** Read-only queries over a p2b map database (for the `p2b` tool; safe while the guest writes). */
import type Database from 'better-sqlite3';
import { openDatabase, readMeta, type P2bMeta } from './store.ts';
import { P2B } from './map.ts';

export const STATE_NAMES: Record<number, string> = {
  [P2B.READ]: 'read',
  [P2B.WRITE_PENDING]: 'write-unflushed',
  [P2B.WRITE_FLUSHED]: 'write',
  [P2B.UNVERIFIED]: 'unverified',
};

export interface MappingRow {
  page: number;
  block: number;
  state: number;
}

export interface P2bStats {
  guest: string;
  pages: number;
  mappedPages: number;
  mappedShare: number;
  referenceablePages: number;
  blocks: number; // distinct blocks mapped
  byState: Record<string, number>;
  regions: { index: number; pages: number; mappedPages: number; mappedShare: number }[];
  counters: Record<string, number>;
  storage: string;
  clean: boolean;
}

export class P2bReader {
  readonly meta: P2bMeta;
  private constructor(readonly db: Database.Database, readonly path: string) {
    this.meta = readMeta(db);
  }

  static open(path: string): P2bReader {
    return new P2bReader(openDatabase(path, { readOnly: true }), path);
  }

  stats(): P2bStats {
    const byStateRows = this.db.prepare('SELECT state, count(*) AS n FROM mapping GROUP BY state').all() as { state: number; n: number }[];
    const byState: Record<string, number> = { read: 0, 'write-unflushed': 0, write: 0, unverified: 0 };
    for (const r of byStateRows) byState[STATE_NAMES[r.state] ?? `state-${r.state}`] = r.n;
    const mapped = byStateRows.reduce((a, r) => a + r.n, 0);
    const blocks = (this.db.prepare('SELECT count(DISTINCT block) AS n FROM mapping').get() as { n: number }).n;
    const regionStmt = this.db.prepare('SELECT count(*) AS n FROM mapping WHERE page >= ? AND page < ?');
    const regions = this.meta.regions.map((r) => {
      const n = (regionStmt.get(r.firstPage, r.firstPage + r.pages) as { n: number }).n;
      return { index: r.index, pages: r.pages, mappedPages: n, mappedShare: round(n / r.pages) };
    });
    const counters = Object.fromEntries((this.db.prepare('SELECT name, value FROM counter').all() as { name: string; value: number }[]).map((r) => [r.name, r.value]));
    return {
      guest: this.meta.guest,
      pages: this.meta.pages,
      mappedPages: mapped,
      mappedShare: round(mapped / this.meta.pages),
      referenceablePages: byState.read + byState.write,
      blocks,
      byState,
      regions,
      counters,
      storage: this.meta.storage,
      clean: this.meta.clean,
    };
  }

  rows(): IterableIterator<MappingRow> {
    return this.db.prepare('SELECT page, block, state FROM mapping ORDER BY page').iterate() as IterableIterator<MappingRow>;
  }

  byPage(page: number): MappingRow | undefined {
    return this.db.prepare('SELECT page, block, state FROM mapping WHERE page = ?').get(page) as MappingRow | undefined;
  }

  byBlock(block: number): MappingRow[] {
    return this.db.prepare('SELECT page, block, state FROM mapping WHERE block = ? ORDER BY page').all(block) as MappingRow[];
  }

  close(): void {
    this.db.close();
  }
}

const round = (x: number) => Math.round(x * 10000) / 10000;
