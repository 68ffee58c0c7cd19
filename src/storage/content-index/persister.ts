/**
 * Writes the content index's changed entries to SQLite on a timer, in chunks that
 * yield to the event loop between them, so the NBD server's I/O never waits for
 * the database (the p2b persister's pattern).
 */
import { ChunkedWriter } from '../../util/chunked-writer.ts';
import type { ContentTable } from './content-table.ts';
import type { ContentIndexStore } from './store.ts';

/** Rows per transaction: ~10 ms at 500 k rows/s, so a flood of new entries stalls no request for long. */
const CHUNK = 5_000;

export class ContentIndexPersister {
  private readonly writer: ChunkedWriter;

  constructor(private readonly table: ContentTable, readonly store: ContentIndexStore, intervalMs = 250) {
    this.writer = new ChunkedWriter((max) => this.store.writeChanges(this.table, max), CHUNK, intervalMs);
  }

  start(): void {
    this.writer.start();
  }

  /** Writes everything that changed now; returns the rows written. */
  flush(): number {
    return this.store.writeChanges(this.table);
  }

  stop(): void {
    this.writer.stop();
  }
}
