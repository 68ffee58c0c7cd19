/** Which kind of livemig database a file is: a p2b map or a content index (by its SQLite application_id). */
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { CINDEX_APPLICATION_ID } from '../../src/storage/content-index/store.ts';
import { applicationId } from '../../src/util/versioned-db.ts';

/** True for a content index; anything else goes to the p2b map's reader, which refuses what it cannot read. */
export function isContentIndex(path: string): boolean {
  if (!existsSync(path)) return false;
  try {
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      return applicationId(db) === CINDEX_APPLICATION_ID;
    } finally {
      db.close();
    }
  } catch {
    return false;
  }
}
