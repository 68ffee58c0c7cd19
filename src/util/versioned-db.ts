/**
 * SQLite files of livemig's own kinds (the p2b map, the content index): each marked
 * with its PRAGMA application_id so a foreign file is refused with a clear error,
 * and its schema versioned with PRAGMA user_version.
 */
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { LivemigError, type ErrorCode } from '../errors.ts';

export interface DatabaseKind {
  /** For messages: "p2b map", "content index". */
  name: string;
  applicationId: number;
  schemaVersion: number;
  notFound: ErrorCode;
  foreign: ErrorCode;
  version: ErrorCode;
}

export function applicationId(db: Database.Database): number {
  return db.pragma('application_id', { simple: true }) as number;
}

/** A file SQLite just created: no application_id and no tables. */
export function isFresh(db: Database.Database): boolean {
  return applicationId(db) === 0 && (db.prepare('SELECT count(*) AS n FROM sqlite_master').get() as { n: number }).n === 0;
}

/**
 * Opens a database of this kind. `create`: a missing or empty file is accepted (the
 * caller writes the schema); anything else must be of this kind and this version.
 */
export function openVersioned(path: string, kind: DatabaseKind, opts: { readOnly?: boolean; create?: boolean } = {}): Database.Database {
  if (!opts.create && !existsSync(path)) throw new LivemigError(kind.notFound, `${path}: no such ${kind.name} database`);
  let db: Database.Database | null = null;
  try {
    db = new Database(path, { readonly: opts.readOnly ?? false, fileMustExist: !opts.create });
    if (opts.create && isFresh(db)) return db;
    if (applicationId(db) !== kind.applicationId) throw new LivemigError(kind.foreign, `${path} is not a livemig ${kind.name} database`);
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version !== kind.schemaVersion) throw new LivemigError(kind.version, `${path} has ${kind.name} schema version ${version}; this livemig reads version ${kind.schemaVersion}`);
    return db;
  } catch (err) {
    db?.close();
    if (err instanceof LivemigError) throw err;
    if ((err as { code?: string }).code === 'SQLITE_NOTADB') throw new LivemigError(kind.foreign, `${path} is not a livemig ${kind.name} database (not SQLite)`);
    throw err;
  }
}

/** Writes a fresh schema and marks the file as this kind and version. */
export function writeSchema(db: Database.Database, kind: DatabaseKind, schema: string, tables: readonly string[]): void {
  db.exec(tables.map((t) => `DROP TABLE IF EXISTS ${t};`).join(' '));
  db.exec(schema);
  db.pragma(`application_id = ${kind.applicationId}`);
  db.pragma(`user_version = ${kind.schemaVersion}`);
}
