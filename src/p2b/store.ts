/**
 * The p2b map on disk: SQLite through better-sqlite3, WAL mode so `p2b` can read
 * while the guest runs, changes written in batched transactions off the hot path.
 * The schema is versioned (PRAGMA user_version) and the file is marked as ours
 * (PRAGMA application_id) so a foreign database is refused with a clear error.
 */
import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { openVersioned, writeSchema, type DatabaseKind } from '../util/versioned-db.ts';
import { COUNTER, P2B, type P2bMap, type P2bState, type CounterName } from './map.ts';

export const APPLICATION_ID = 0x6c6d6967; // "lmig"
export const SCHEMA_VERSION = 1;

export interface P2bMeta {
  guest: string;
  pages: number;
  pageSize: number;
  regions: { index: number; firstPage: number; pages: number }[];
  storage: string;
  storageSize: number;
  createdAt: string;
  /** 1 when the writer closed the map after a final flush; 0 while it runs or after a crash. */
  clean: boolean;
}

const SCHEMA = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE mapping (
  page INTEGER PRIMARY KEY,
  block INTEGER NOT NULL,
  state INTEGER NOT NULL,     -- 1 read, 2 write not yet flushed, 3 write flushed, 4 unverified
  updated_ms INTEGER NOT NULL
);
CREATE INDEX mapping_by_block ON mapping (block);
CREATE TABLE counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
`;

export const P2B_DATABASE: DatabaseKind = { name: 'p2b map', applicationId: APPLICATION_ID, schemaVersion: SCHEMA_VERSION, notFound: 'P2B_NOT_FOUND', foreign: 'P2B_FOREIGN_FILE', version: 'P2B_SCHEMA_VERSION' };

export function openDatabase(path: string, opts: { readOnly?: boolean; create?: boolean } = {}): Database.Database {
  return openVersioned(path, P2B_DATABASE, opts);
}

export class P2bStore {
  private readonly upsert: Database.Statement;
  private readonly remove: Database.Statement;
  private readonly setCounter: Database.Statement;
  private readonly setMeta: Database.Statement;
  rowsWritten = 0;

  private constructor(readonly db: Database.Database, readonly path: string) {
    this.upsert = db.prepare('INSERT OR REPLACE INTO mapping (page, block, state, updated_ms) VALUES (?, ?, ?, ?)');
    this.remove = db.prepare('DELETE FROM mapping WHERE page = ?');
    this.setCounter = db.prepare('INSERT OR REPLACE INTO counter (name, value) VALUES (?, ?)');
    this.setMeta = db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
  }

  /** Creates a fresh map database (replacing any old one's content) for a guest. */
  static create(path: string, meta: Omit<P2bMeta, 'createdAt' | 'clean'>): P2bStore {
    const db = openDatabase(path, { create: true });
    // No fsync while creating: a destination creates its map mid-migration, and an fsync
    // there waits for whatever else the file system has dirty (760 ms seen). A file cut
    // short by a power loss here holds nothing yet; a killed process loses nothing.
    db.pragma('synchronous = OFF');
    db.pragma('journal_mode = WAL');
    writeSchema(db, P2B_DATABASE, SCHEMA, ['mapping', 'meta', 'counter']);
    const store = new P2bStore(db, path);
    const full: P2bMeta = { ...meta, createdAt: new Date().toISOString(), clean: false };
    db.transaction(() => {
      for (const [k, v] of Object.entries(full)) store.setMeta.run(k, JSON.stringify(v));
    })();
    db.pragma('synchronous = NORMAL'); // WAL + NORMAL: a killed process loses nothing committed
    return store;
  }

  /** Opens an existing map database for writing (a guest restarting on its state dir). */
  static open(path: string): P2bStore {
    const db = openDatabase(path);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    return new P2bStore(db, path);
  }

  meta(): P2bMeta {
    return readMeta(this.db);
  }

  setClean(clean: boolean): void {
    this.setMeta.run('clean', JSON.stringify(clean));
  }

  /** Writes every entry whose changed bit is set, in one transaction; returns the rows written. */
  writeChanges(map: P2bMap, maxRows = Infinity): number {
    const now = Date.now();
    let rows = 0;
    this.db.transaction(() => {
      const changed = map.changed;
      for (let w = 0; w < changed.length && rows < maxRows; w++) {
        if (changed[w] === 0) continue;
        let word = Atomics.exchange(changed, w, 0);
        while (word !== 0) {
          if (rows >= maxRows) {
            Atomics.or(changed, w, word); // not written this time: still changed
            break;
          }
          const page = w * 32 + (31 - Math.clz32(word & -word));
          word &= word - 1;
          const state = map.state[page];
          if (state === P2B.NONE) this.remove.run(page);
          else this.upsert.run(page, map.block[page], state, now);
          rows++;
        }
      }
      for (const name of Object.keys(COUNTER) as CounterName[]) this.setCounter.run(name, map.count(name));
    })();
    this.rowsWritten += rows;
    return rows;
  }

  /**
   * Loads the stored entries into a map as UNVERIFIED: after a restart nothing
   * proves a page still equals its block until it is checked.
   */
  loadUnverified(map: P2bMap): number {
    let n = 0;
    for (const row of this.db.prepare('SELECT page, block FROM mapping').iterate() as IterableIterator<{ page: number; block: number }>) {
      if (row.page >= map.pages) continue;
      map.restore(row.page, row.block, P2B.UNVERIFIED as P2bState);
      n++;
    }
    return n;
  }

  /** Writes a consistent copy of the database to `path` (replacing it). */
  snapshot(path: string): void {
    rmSync(path, { force: true });
    this.db.prepare('VACUUM INTO ?').run(path);
  }

  close(): void {
    this.db.close();
  }
}

export function readMeta(db: Database.Database): P2bMeta {
  const rows = db.prepare('SELECT key, value FROM meta').all() as { key: string; value: string }[];
  const m = Object.fromEntries(rows.map((r) => [r.key, JSON.parse(r.value)]));
  return m as P2bMeta;
}
