/**
 * The content index on disk: SQLite through better-sqlite3, as the p2b map is kept
 * (WAL so `p2b` reads while the server runs, versioned schema, batched writes off
 * the I/O path), marked with its own application_id so the `p2b` tool tells the
 * two kinds apart and anything else is refused. Rows are keyed by entry id, so the
 * persister writes only the ids whose entry changed.
 */
import Database from 'better-sqlite3';
import { openVersioned, writeSchema, isFresh, applicationId, type DatabaseKind } from '../../util/versioned-db.ts';
import { LivemigError } from '../../errors.ts';
import { CINDEX_COUNTER, type CindexCounterName, type ContentTable } from './content-table.ts';

export const CINDEX_APPLICATION_ID = 0x6c6d6369; // "lmci"
export const CINDEX_SCHEMA_VERSION = 1;

/** What identifies the image's bytes at a clean close: any change means someone may have written it. */
export interface ImageIdentity {
  dev: string;
  ino: string;
  size: string;
  mtimeNs: string;
}

export interface CindexMeta {
  export: string;
  /** The served file, or null for an export with no file (memory). */
  image: string | null;
  hash: string;
  seed: string;
  blockSize: number;
  capacity: number;
  createdAt: string;
  /** 1 after a final flush at a clean stop; 0 while the server runs or after a crash. */
  clean: boolean;
  /** The image as it was at the last clean stop. */
  imageIdentity: ImageIdentity | null;
}

const SCHEMA = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entry (
  id INTEGER PRIMARY KEY,      -- the slot in the in-memory table
  hash_hi INTEGER NOT NULL,    -- the 64-bit content hash, high and low 32 bits
  hash_lo INTEGER NOT NULL,
  block INTEGER NOT NULL       -- 4 KiB block number in the export
);
CREATE TABLE counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
`;


export const CINDEX_DATABASE: DatabaseKind = {
  name: 'content index', applicationId: CINDEX_APPLICATION_ID, schemaVersion: CINDEX_SCHEMA_VERSION,
  notFound: 'CINDEX_NOT_FOUND', foreign: 'CINDEX_FOREIGN_FILE', version: 'CINDEX_FOREIGN_FILE',
};

/** Opens an existing index database read-only (inspection), refusing anything that is not one. */
export function openIndexDatabase(path: string): Database.Database {
  return openVersioned(path, CINDEX_DATABASE, { readOnly: true });
}

export class ContentIndexStore {
  private readonly upsert: Database.Statement;
  private readonly remove: Database.Statement;
  private readonly setCounter: Database.Statement;
  private readonly setMetaStmt: Database.Statement;
  rowsWritten = 0;

  private constructor(readonly db: Database.Database, readonly path: string) {
    this.upsert = db.prepare('INSERT OR REPLACE INTO entry (id, hash_hi, hash_lo, block) VALUES (?, ?, ?, ?)');
    this.remove = db.prepare('DELETE FROM entry WHERE id = ?');
    this.setCounter = db.prepare('INSERT OR REPLACE INTO counter (name, value) VALUES (?, ?)');
    this.setMetaStmt = db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
  }

  /**
   * Opens the index database at path for writing, creating it if absent. A file that
   * is another program's (or livemig's p2b map) is refused; one of ours with another
   * schema version is rebuilt empty, since the index is only a cache.
   * Returns the stored meta, or null when the database is new (or was rebuilt).
   */
  static open(path: string): { store: ContentIndexStore; previous: CindexMeta | null } {
    let db: Database.Database;
    try {
      db = new Database(path);
    } catch (err) {
      throw new LivemigError('CINDEX_CONFIG', `cannot open ${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const fresh = isFresh(db);
      if (!fresh && applicationId(db) !== CINDEX_APPLICATION_ID) throw new LivemigError('CINDEX_FOREIGN_FILE', `${path} is not a livemig content index database; not touching it`);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL'); // WAL + NORMAL: a killed process loses nothing committed
      const current = !fresh && (db.pragma('user_version', { simple: true }) as number) === CINDEX_SCHEMA_VERSION;
      if (!current) {
        writeSchema(db, CINDEX_DATABASE, SCHEMA, ['entry', 'meta', 'counter']);
      }
      const store = new ContentIndexStore(db, path);
      return { store, previous: current ? readMeta(db) : null };
    } catch (err) {
      db.close();
      const e = err as Error & { code?: string };
      if (e.code === 'SQLITE_NOTADB') throw new LivemigError('CINDEX_FOREIGN_FILE', `${path} is not a livemig content index database (not SQLite)`);
      throw err;
    }
  }

  /** Forgets every entry and counter, and writes new meta (a fresh start). */
  reset(meta: CindexMeta): void {
    this.db.transaction(() => {
      this.db.exec('DELETE FROM entry; DELETE FROM counter; DELETE FROM meta;');
      this.setMeta(meta);
    })();
  }

  setMeta(meta: Partial<CindexMeta>): void {
    this.db.transaction(() => {
      for (const [k, v] of Object.entries(meta)) this.setMetaStmt.run(k, JSON.stringify(v));
    })();
  }

  meta(): CindexMeta {
    return readMeta(this.db);
  }

  /** Loads every stored entry at its id; returns how many went in. */
  loadInto(table: ContentTable): number {
    let n = 0;
    const rows = this.db.prepare('SELECT id, hash_hi, hash_lo, block FROM entry').raw().iterate() as IterableIterator<[number, number, number, number]>;
    for (const [id, hi, lo, block] of rows) if (table.restore(id, hi, lo, block)) n++;
    table.finishRestore();
    for (const r of this.db.prepare('SELECT name, value FROM counter').all() as { name: string; value: number }[]) {
      const i = CINDEX_COUNTER[r.name as CindexCounterName];
      if (i !== undefined) table.counters[i] = r.value;
    }
    return n;
  }

  /** Writes every entry whose changed bit is set, in one transaction; returns the rows written. */
  writeChanges(table: ContentTable, maxRows = Infinity): number {
    let rows = 0;
    this.db.transaction(() => {
      const changed = table.changed;
      for (let w = 0; w < changed.length && rows < maxRows; w++) {
        let word = changed[w];
        while (word !== 0 && rows < maxRows) {
          const bit = 31 - Math.clz32(word & -word);
          word &= word - 1;
          const id = w * 32 + bit;
          const e = table.entry(id);
          if (e) this.upsert.run(id, e[0], e[1], e[2]);
          else this.remove.run(id);
          rows++;
        }
        changed[w] = word; // bits not written this time stay set
      }
      for (const name of Object.keys(CINDEX_COUNTER) as CindexCounterName[]) this.setCounter.run(name, table.count(name));
    })();
    this.rowsWritten += rows;
    return rows;
  }

  close(): void {
    this.db.close();
  }
}

export function readMeta(db: Database.Database): CindexMeta {
  const rows = db.prepare('SELECT key, value FROM meta').all() as { key: string; value: string }[];
  return Object.fromEntries(rows.map((r) => [r.key, JSON.parse(r.value)])) as CindexMeta;
}
