/**
 * Encodes a connection's replies (simple, or structured when agreed) and sends
 * the replies finished in one turn of the event loop in one writev: a syscall per
 * reply was the largest cost under many small requests.
 */
import type { Socket } from 'node:net';
import { SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, REPLY_TYPE } from '../constants.ts';
import { MIN_POOLED, type BufferPool } from '../buffer-pool.ts';
import type { Request } from './request.ts';

/** Where a read lands: `data`, inside `frame` (header room in front) for small reads, alone for pooled ones. */
export interface ReadBuffer {
  frame: Buffer | null;
  data: Buffer;
}

export class ReplyWriter {
  private corked = false;
  /** hold() depth: while above 0, replies wait for flush(). */
  private held = 0;
  /** An end-of-turn uncork is pending. */
  private scheduled = false;
  /** Bytes of header in front of read data. */
  private readonly readHeader: number;

  constructor(private readonly socket: Socket, private readonly structured: boolean, private readonly pool: BufferPool) {
    this.readHeader = structured ? 28 : 16;
  }

  /** A buffer for a read's data; small reads share one (pooled) buffer with their reply header. */
  readBuffer(length: number): ReadBuffer {
    if (length >= MIN_POOLED) return { frame: null, data: this.pool.get(length) };
    const frame = this.pool.get(this.readHeader + length);
    return { frame, data: frame.subarray(this.readHeader) };
  }

  /** Returns a read buffer to the pool (after sending, or instead). */
  dropRead(buf: ReadBuffer): void {
    this.pool.put(buf.frame ?? buf.data);
  }

  /** Sends a read's data; `sent` runs once the kernel has it (or the connection is gone). */
  read(req: Request, buf: ReadBuffer, sent: () => void): void {
    const done = () => {
      this.dropRead(buf);
      sent();
    };
    if (this.socket.destroyed) return done();
    const n = buf.data.length;
    const h = buf.frame ?? Buffer.allocUnsafe(this.readHeader);
    if (!this.structured) this.simpleHeader(h, req, 0);
    else {
      h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
      h.writeUInt16BE(REPLY_FLAG_DONE, 4);
      h.writeUInt16BE(n ? REPLY_TYPE.OFFSET_DATA : REPLY_TYPE.NONE, 6);
      h.writeUInt32BE(req.handleHi, 8);
      h.writeUInt32BE(req.handleLo, 12);
      h.writeUInt32BE(n ? n + 8 : 0, 16);
      h.writeUInt32BE(Math.floor(req.offset / 0x1_0000_0000), 20);
      h.writeUInt32BE(req.offset >>> 0, 24);
    }
    this.batch();
    if (buf.frame) this.socket.write(n || !this.structured ? buf.frame : buf.frame.subarray(0, 20), done);
    else {
      this.socket.write(h);
      this.socket.write(buf.data, done);
    }
  }

  /** Success without data. */
  ok(req: Request): void {
    if (this.socket.destroyed) return;
    const h = Buffer.allocUnsafe(16);
    this.simpleHeader(h, req, 0);
    this.batch();
    this.socket.write(h);
  }

  /** An error; with structured replies a READ's error is a chunk carrying the message. */
  error(req: Request, errno: number, message: string, isRead: boolean): void {
    if (this.socket.destroyed) return;
    if (!this.structured || !isRead) {
      const h = Buffer.allocUnsafe(16);
      this.simpleHeader(h, req, errno);
      this.batch();
      this.socket.write(h);
      return;
    }
    const msg = Buffer.from(message.slice(0, 1024));
    const h = Buffer.allocUnsafe(26 + msg.length);
    h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(REPLY_FLAG_DONE, 4);
    h.writeUInt16BE(REPLY_TYPE.ERROR, 6);
    h.writeUInt32BE(req.handleHi, 8);
    h.writeUInt32BE(req.handleLo, 12);
    h.writeUInt32BE(6 + msg.length, 16);
    h.writeUInt32BE(errno, 20);
    h.writeUInt16BE(msg.length, 24);
    msg.copy(h, 26);
    this.batch();
    this.socket.write(h);
  }

  private simpleHeader(h: Buffer, req: Request, errno: number): void {
    h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(errno, 4);
    h.writeUInt32BE(req.handleHi, 8);
    h.writeUInt32BE(req.handleLo, 12);
  }

  /**
   * Between hold() and flush(), replies are only queued: the caller sends
   * everything it answered from one chunk of requests at once. Outside, replies
   * finished in one turn (asynchronous completions) leave together at its end.
   */
  hold(): void {
    this.held++;
  }

  flush(): void {
    this.held--;
    if (this.held === 0 && this.corked && !this.scheduled) this.uncork();
  }

  private readonly uncork = () => {
    this.scheduled = false;
    if (this.held > 0 || !this.corked) return;
    this.corked = false;
    this.socket.uncork();
  };

  private batch(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    if (this.held > 0) return;
    this.scheduled = true;
    setImmediate(this.uncork);
  }
}
