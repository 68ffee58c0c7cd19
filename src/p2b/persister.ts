/**
 * Writes the shared map's changes to SQLite on a timer, on the engine's thread,
 * so the guest's I/O path never waits for the database.
 */
import type { P2bMap } from './map.ts';
import type { P2bStore } from './store.ts';

export class P2bPersister {
  private timer: NodeJS.Timeout | null = null;
  lastFlushRows = 0;

  constructor(private readonly map: P2bMap, readonly store: P2bStore, private readonly intervalMs = 250) {}

  start(): void {
    this.store.setClean(false);
    this.timer ??= setInterval(() => this.flush(), this.intervalMs);
    this.timer.unref();
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
