/**
 * Every wait of a proxy is bounded: a watchdog fails the migration when nothing moved
 * (no byte from QEMU or the link, none written, no answer from the storage) for
 * TIMEOUT.STALL, naming what the proxy was waiting for.
 */
import { LivemigError } from '../errors.ts';
import { TIMEOUT } from '../wire/index.ts';

export class StallWatch {
  private last = performance.now();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly waitingFor: () => string, private readonly fail: (e: Error) => void, private readonly limitMs = TIMEOUT.STALL) {}

  /** Something moved. */
  touch(): void {
    this.last = performance.now();
  }

  start(): void {
    this.last = performance.now();
    this.timer = setInterval(() => {
      const idle = performance.now() - this.last;
      if (idle > this.limitMs) this.fail(new LivemigError('QEMU_PROXY_STALLED', `nothing moved for ${Math.round(idle / 1000)} s while waiting for ${this.waitingFor()}`));
    }, Math.min(1000, this.limitMs / 4));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
