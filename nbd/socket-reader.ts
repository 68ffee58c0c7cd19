/**
 * Awaitable exact-length reads from a socket, with back-pressure: the socket is
 * paused while more than `highWater` bytes sit unread.
 */
import type { Socket } from 'node:net';
import { ByteQueue } from './byte-queue.ts';
import { NbdError } from './errors.ts';

export class SocketReader {
  private readonly queue = new ByteQueue();
  private waiter: { n: number; resolve: () => void; reject: (e: Error) => void } | null = null;
  private ended: Error | null = null;
  /** Feeds received bytes; called for 'data' events, or by the owner in manual mode. */
  readonly push = (chunk: Buffer) => {
    this.queue.push(chunk);
    if (this.queue.length > this.highWater) this.socket.pause();
    this.wake();
  };
  private readonly onEnd = () => this.finish(new NbdError('NBD_CLOSED', 'connection closed by peer'));
  private readonly onError = (err: Error) => this.finish(new NbdError('NBD_CLOSED', `connection error: ${err.message}`, { cause: err }));

  /** With `manual`, the owner feeds bytes through push() (for sockets created with `onread`). */
  constructor(private readonly socket: Socket, private readonly highWater = 64 * 1024 * 1024, manual = false) {
    if (!manual) socket.on('data', this.push);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  get buffered(): number {
    return this.queue.length;
  }

  async read(n: number): Promise<Buffer> {
    await this.need(n);
    return this.take(() => this.queue.take(n));
  }

  /** Reads and discards n bytes without holding them all in memory. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      await this.need(Math.min(left, 1));
      left -= this.take(() => this.queue.skip(left));
    }
  }

  /** Stops reading: the remaining bytes are returned for another parser to take. */
  detach(): Buffer[] {
    this.socket.off('data', this.push);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    return this.queue.drain();
  }

  private take<T>(fn: () => T): T {
    const out = fn();
    if (this.socket.isPaused() && this.queue.length <= this.highWater / 2) this.socket.resume();
    return out;
  }

  private need(n: number): Promise<void> {
    if (this.queue.length >= n) return Promise.resolve();
    if (this.ended) return Promise.reject(this.ended);
    if (this.socket.isPaused()) this.socket.resume(); // a read larger than highWater must still complete
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  private wake(): void {
    if (this.waiter && this.queue.length >= this.waiter.n) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve();
    }
  }

  private finish(err: Error): void {
    if (this.ended) return;
    this.ended = err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      if (this.queue.length >= w.n) w.resolve();
      else w.reject(err);
    }
  }
}
