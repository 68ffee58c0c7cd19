/**
 * Background writes to SQLite on a timer, in transactions of at most `chunk` rows,
 * yielding to the event loop between them: a million changes at once (a migrated
 * guest's map, a flood of newly indexed blocks) must not stall everything else.
 */
export class ChunkedWriter {
  private timer: NodeJS.Timeout | null = null;
  private draining = false;

  /** `writeChunk(max)` writes at most max rows and returns how many it wrote. */
  constructor(private readonly writeChunk: (max: number) => number, private readonly chunk: number, private readonly intervalMs = 250) {}

  get running(): boolean {
    return this.timer !== null;
  }

  start(): void {
    this.timer ??= setInterval(() => this.drain(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer; a chunk in progress finishes, none follows (the owner flushes the rest). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private drain(): void {
    if (this.draining) return;
    const step = () => {
      this.draining = false;
      if (!this.timer) return; // stopped between chunks: the owner's final flush writes the rest
      if (this.writeChunk(this.chunk) === this.chunk) {
        this.draining = true;
        setImmediate(step);
      }
    };
    this.draining = true;
    step();
  }
}
