/**
 * Writes the shared map's changes to SQLite on a timer, on the engine's thread,
 * so the guest's I/O path never waits for the database.
 */
import { ChunkedWriter } from '../util/chunked-writer.ts';
import type { P2bMap } from './map.ts';
import type { P2bStore } from './store.ts';

/** Rows per transaction when writing in the background: about 30 ms at 600 k rows/s. */
const CHUNK = 20_000;

export class P2bPersister {
  private readonly writer: ChunkedWriter;
  lastFlushRows = 0;

  constructor(private readonly map: P2bMap, readonly store: P2bStore, intervalMs = 250) {
    this.writer = new ChunkedWriter((max) => (this.lastFlushRows = this.store.writeChanges(this.map, max)), CHUNK, intervalMs);
  }

  start(): void {
    this.store.setClean(false);
    this.writer.start();
  }

  /** Writes what changed now; returns the number of rows. */
  flush(): number {
    this.lastFlushRows = this.store.writeChanges(this.map);
    return this.lastFlushRows;
  }

  /** Final flush, marked clean, database closed. */
  close(): void {
    this.writer.stop();
    this.flush();
    this.store.setClean(true);
    this.store.close();
  }
}
