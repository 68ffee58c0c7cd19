/**
 * QEMU's stream rebuilt, in order: stream bytes as they arrived (views of the frames)
 * and reference runs once all their pages landed, written to QEMU's socket as fast as
 * it reads. What waits here is bounded by the window: the receiver reads no frame
 * while more is held (back-pressure up to the source, and on to the source's QEMU).
 */
import type net from 'node:net';
import { BufferPool } from '../../../nbd/index.ts';
import { RefRun, runBytes } from './ref-run.ts';

type Item = Buffer | RefRun;

/** Bytes handed to QEMU's socket and not yet taken by the kernel before pumping waits for 'drain'. */
const OUT_BYTES = 1 << 20;

export class QemuOutput {
  /** Run buffers from one page on are reused (most runs are under 64 KiB: a fresh ArrayBuffer each fed the garbage collector). */
  readonly pool = new BufferPool(256, 64 << 20, 4096);
  private items: Item[] = [];
  private head = 0;
  private blocked = false;
  private roomWaiters: (() => void)[] = [];
  /** Bytes waiting here, and bytes handed to QEMU's socket. */
  held = 0;
  written = 0;
  refPagesWritten = 0;
  /** Called after a run went out, and whenever everything so far went out. */
  onRunWritten: () => void = () => {};
  onIdle: () => void = () => {};
  /** Called after each pump that wrote something. */
  onWritten: () => void = () => {};
  /** Pages asked for again and not yet here: their answer must be read even when the window is full. */
  owed: () => boolean = () => false;

  constructor(private readonly socket: net.Socket, private readonly windowBytes: number) {}

  /** Every item so far handed to QEMU's socket, and taken by the kernel. */
  get handedAll(): boolean {
    return this.head === this.items.length && this.socket.writableLength === 0;
  }

  get idle(): boolean {
    return this.head === this.items.length && !this.blocked;
  }

  bytes(data: Buffer): void {
    this.items.push(data);
    this.held += data.length;
  }

  /** A run's buffer, its page headers to be written by the run. */
  runBuffer(count: number): Buffer {
    return this.pool.get(runBytes(count));
  }

  run(r: RefRun): void {
    this.items.push(r);
    this.held += r.buf.length;
  }

  /**
   * Writes what is ready at the head, corked: one writev of up to OUT_BYTES, not a
   * write (and a wait for 'drain') per run, which cost a system call per 90 KB.
   */
  pump(): void {
    const before = this.written;
    if (!this.blocked) this.socket.cork();
    while (!this.blocked && this.head < this.items.length && this.socket.writableLength < OUT_BYTES) {
      const item = this.items[this.head];
      if (item instanceof RefRun && !item.ready) break;
      this.items[this.head++] = undefined as unknown as Item;
      const buf = item instanceof RefRun ? item.buf : item;
      this.held -= buf.length;
      this.written += buf.length;
      if (item instanceof RefRun) this.socket.write(buf, () => this.pool.put(buf));
      else this.socket.write(buf);
      if (item instanceof RefRun) {
        this.refPagesWritten += item.count;
        this.onRunWritten();
      }
    }
    if (!this.blocked) {
      this.socket.uncork();
      if (this.socket.writableLength >= OUT_BYTES) {
        this.blocked = true; // write() said so past 16 KiB: 'drain' comes once all went out
        this.socket.once('drain', () => ((this.blocked = false), this.pump()));
      }
    }
    if (this.written !== before) this.onWritten();
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    this.wakeRoom();
    if (this.idle) this.onIdle();
  }

  /** Resolves once less than the window is held (or pages are owed, whose answers must come in). */
  room(): Promise<void> {
    if (this.held < this.windowBytes || this.owed()) return Promise.resolve();
    return new Promise((r) => this.roomWaiters.push(r));
  }

  wakeRoom(): void {
    if (this.held < this.windowBytes || this.owed()) for (const w of this.roomWaiters.splice(0)) w();
  }
}
