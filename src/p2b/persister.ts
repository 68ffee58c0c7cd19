/**
 * Writes the shared map's changes to SQLite on a timer, on the engine's thread,
 * so the guest's I/O path never waits for the database.
 */
import type { P2bMap } from './map.ts';
import type { P2bStore } from './store.ts';

/** Rows per transaction when writing in the background: about 30 ms at 600 k rows/s. */
const CHUNK = 20_000;

export class P2bPersister {
  private timer: NodeJS.Timeout | null = null;
  private draining = false;
  lastFlushRows = 0;

  constructor(private readonly map: P2bMap, readonly store: P2bStore, private readonly intervalMs = 250) {}

  start(): void {
    this.store.setClean(false);
    this.timer ??= setInterval(() => this.drain(), this.intervalMs);
    this.timer.unref();
  }

  /**
   * Writes what changed in transactions of at most CHUNK rows, yielding to the event
   * loop between them: a million changes at once (a migrated guest's map) must not
   * stall everything else for seconds.
   */
  private drain(): void {
    if (this.draining) return;
    const step = () => {
      this.draining = false;
      if (!this.timer) return; // closed between chunks: close() wrote the rest
      const rows = this.store.writeChanges(this.map, CHUNK);
      this.lastFlushRows = rows;
      if (rows === CHUNK) {
        this.draining = true;
        setImmediate(step);
      }
    };
    this.draining = true;
    step();
  }

  /** Writes what changed now; returns the number of rows. */
  flush(): number {
    this.lastFlushRows = this.store.writeChanges(this.map);
    return this.lastFlushRows;
  }

  /** Final flush, marked clean, database closed. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.flush();
    this.store.setClean(true);
    this.store.close();
  }
}
