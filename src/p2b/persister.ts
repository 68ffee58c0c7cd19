/**
 * Writes the shared map's changes to SQLite on a timer, on the engine's thread,
 * so the guest's I/O path never waits for the database. A database that cannot
 * be written (its file system full) stops the persisting, never the guest: the
 * map in memory stays right, and `failure` says why the file lags behind it.
 */
import { LivemigError } from '../errors.ts';
import { ChunkedWriter } from '../util/chunked-writer.ts';
import type { P2bMap } from './map.ts';
import type { P2bStore } from './store.ts';

/** Rows per transaction when writing in the background: about 30 ms at 600 k rows/s. */
const CHUNK = 20_000;

export class P2bPersister {
  private readonly writer: ChunkedWriter;
  lastFlushRows = 0;
  /** Why the database stopped being written (P2B_WRITE), if it did. */
  failure: LivemigError | null = null;

  constructor(private readonly map: P2bMap, readonly store: P2bStore, intervalMs = 250) {
    this.writer = new ChunkedWriter((max) => this.write(max), CHUNK, intervalMs);
  }

  private write(max?: number): number {
    let rows = 0;
    this.tryWrite(() => (rows = this.lastFlushRows = this.store.writeChanges(this.map, max)));
    return rows;
  }

  /** Runs a write to the database unless it failed before; a failure is kept in `failure`, never thrown. */
  tryWrite(write: () => void): void {
    if (this.failure) return;
    try {
      write();
    } catch (err) {
      this.failure = new LivemigError('P2B_WRITE', `the p2b map database ${this.store.path} cannot be written: ${(err as Error).message}`, { cause: err });
      this.writer.stop();
    }
  }

  start(): void {
    this.tryWrite(() => this.store.setClean(false));
    this.writer.start();
  }

  /** Writes what changed now; returns the number of rows. */
  flush(): number {
    return this.write();
  }

  /** Final flush, marked clean (only if every change reached it), database closed. */
  close(): void {
    this.writer.stop();
    this.flush();
    try {
      if (!this.failure) this.store.setClean(true);
    } finally {
      this.store.close();
    }
  }
}
