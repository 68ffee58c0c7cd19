/**
 * Writes the content index's changed entries to SQLite on a timer, in chunks that
 * yield to the event loop between them, so the NBD server's I/O never waits for
 * the database (the p2b persister's pattern).
 */
import type { ContentTable } from './content-table.ts';
import type { ContentIndexStore } from './store.ts';

/** Rows per transaction: ~10 ms at 500 k rows/s, so a flood of new entries stalls no request for long. */
const CHUNK = 5_000;

export class ContentIndexPersister {
  private timer: NodeJS.Timeout | null = null;
  private draining = false;

  constructor(private readonly table: ContentTable, readonly store: ContentIndexStore, private readonly intervalMs = 250) {}

  start(): void {
    this.timer ??= setInterval(() => this.drain(), this.intervalMs);
    this.timer.unref();
  }

  private drain(): void {
    if (this.draining) return;
    const step = () => {
      this.draining = false;
      if (!this.timer) return; // stopped between chunks: flush() writes the rest
      if (this.store.writeChanges(this.table, CHUNK) === CHUNK) {
        this.draining = true;
        setImmediate(step);
      }
    };
    this.draining = true;
    step();
  }

  /** Writes everything that changed now; returns the rows written. */
  flush(): number {
    return this.store.writeChanges(this.table);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
