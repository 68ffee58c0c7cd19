/**
 * The server side of the transmission phase for one connection. Requests are
 * parsed and dispatched synchronously as bytes arrive, and answered in
 * completion order (the protocol allows any order). A backend's fast path
 * (readNow/writeNow) answers a request within the same turn, with no promise or
 * thread hop; anything else goes through the backend's asynchronous calls.
 * At most `maxInflight` requests and `maxInflightBytes` (or one request) run at
 * once, within the server-wide byte budget; while a request waits for room, or
 * the client is not reading its replies, the socket is not read, which pushes
 * back on the client through TCP.
 */
import type { Socket } from 'node:net';
import { CMD, CMD_FLAG, ERRNO, REQUEST_HEADER_SIZE, errnoName } from '../constants.ts';
import { ByteQueue } from '../byte-queue.ts';
import type { Negotiated } from './negotiation.ts';
import type { Logger } from '../logger.ts';
import type { BufferPool } from '../buffer-pool.ts';
import type { ByteBudget } from './byte-budget.ts';
import { parseRequest, checkRequest, RequestError, type Request } from './request.ts';
import { ReplyWriter, type ReadBuffer } from './replies.ts';
import type { InlineIo } from './inline-io.ts';
import type { Leases } from './leases.ts';

export interface TransmissionLimits {
  maxRequest: number;
  /** Requests in progress at once on one connection. */
  maxInflight: number;
  /** Bytes of read and write data in progress at once on one connection (one request may exceed it alone). */
  maxInflightBytes: number;
  /** The same, shared by every connection of the server. */
  budget: ByteBudget;
}

export interface TransmissionContext {
  session: Negotiated;
  limits: TransmissionLimits;
  log: Logger;
  shuttingDown: () => boolean;
  pool: BufferPool;
  /** When the export's small I/O may run on the event loop; null: never. */
  inline: InlineIo | null;
  /** Requests in progress across the server's connections. */
  activity: { inflight: number };
  /** The server's leases: while another token holds the export's, this connection may not change it. */
  leases: Leases | null;
}

/** Replies without counted data queued in Node beyond this stop the reading of new requests until the client catches up. */
const MAX_QUEUED_REPLIES = 4 * 1024 * 1024;
/** Unparsed bytes queued beyond this pause the socket. */
const HIGH_WATER = 4 * 1024 * 1024;

/** Serves requests until NBD_CMD_DISC (after the requests in flight), a bad request magic, or the end of the connection. */
export function serveTransmission(socket: Socket, leftover: Buffer[], ctx: TransmissionContext): Promise<void> {
  return new Promise((resolve) => new Connection(socket, ctx, resolve).start(leftover));
}

/** A write whose payload is still arriving (into `data`, or dropped when the request is refused). */
interface Payload {
  req: Request;
  left: number;
}

class Connection {
  private readonly queue = new ByteQueue();
  private readonly replies: ReplyWriter;
  private payload: Payload | null = null;
  /** A request that waits for room under the limits; nothing more is parsed meanwhile. */
  private stalled: Request | null = null;
  /** What it waits for: a request of this connection to finish, or the server-wide budget. */
  private stalledOn: 'slot' | 'budget' = 'slot';
  private waitingForDrain = false;
  private ending = false;
  private closed = false;
  private inflight = 0;
  private inflightBytes = 0;

  constructor(private readonly socket: Socket, private readonly ctx: TransmissionContext, private readonly done: () => void) {
    this.replies = new ReplyWriter(socket, ctx.session.structuredReplies, ctx.pool);
  }

  start(leftover: Buffer[]): void {
    for (const c of leftover) this.queue.push(c);
    this.socket.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      if (this.queue.length > HIGH_WATER) this.socket.pause();
      this.pump();
    });
    this.socket.on('close', () => this.onClose());
    this.socket.resume();
    this.pump();
  }

  /** Parses and dispatches as far as the bytes and the limits allow; the replies it produced leave together. */
  private pump(): void {
    this.replies.hold();
    try {
      this.parseAvailable();
    } finally {
      this.replies.flush();
    }
    if (this.socket.isPaused() && !this.stalled && !this.waitingForDrain && this.queue.length <= HIGH_WATER / 2) this.socket.resume();
  }

  private parseAvailable(): void {
    while (!this.ending && !this.closed && !this.stalled && !this.waitingForDrain) {
      if (this.payload) {
        if (!this.receivePayload(this.payload)) break;
        continue;
      }
      if (this.queue.length < REQUEST_HEADER_SIZE) break;
      const req = parseRequest(this.queue.take(REQUEST_HEADER_SIZE), this.ctx.limits.maxRequest);
      if (!req) {
        this.ctx.log.warn({}, 'bad request magic; closing connection');
        return this.finish(); // cannot resynchronise the stream: hard disconnect
      }
      if (req.type === CMD.DISC) {
        this.ending = true; // the spec: handle all outstanding requests, then close
        return this.finishWhenIdle();
      }
      if (this.admit(req)) this.proceed(req);
      this.watchQueuedReplies();
    }
  }

  /** Counts the request against the limits, or stalls parsing until it fits. */
  private admit(req: Request): boolean {
    const { maxInflight, maxInflightBytes, budget } = this.ctx.limits;
    const fits = this.inflight === 0 || (this.inflight < maxInflight && this.inflightBytes + req.bytes <= maxInflightBytes);
    if (!fits) return this.stall(req, 'slot');
    if (req.bytes) {
      const granted = budget.take(req.bytes);
      if (granted) {
        void granted.then(() => this.onBudget(req));
        return this.stall(req, 'budget');
      }
    }
    this.inflight++;
    this.inflightBytes += req.bytes;
    this.ctx.activity.inflight++;
    return true;
  }

  private stall(req: Request, on: 'slot' | 'budget'): false {
    this.stalled = req;
    this.stalledOn = on;
    this.socket.pause();
    return false;
  }

  /** The server-wide budget granted a stalled request's bytes. */
  private onBudget(req: Request): void {
    if (this.closed) return this.ctx.limits.budget.give(req.bytes);
    this.stalled = null;
    this.inflight++;
    this.inflightBytes += req.bytes;
    this.ctx.activity.inflight++;
    this.proceed(req);
    this.pump();
  }

  private proceed(req: Request): void {
    if (req.type !== CMD.WRITE) return this.dispatch(req);
    // The payload follows whatever the verdict; a refused one is read and dropped, never buffered.
    if (req.bytes) req.data = this.ctx.pool.get(req.length);
    this.payload = { req, left: req.length };
  }

  /** Moves queued payload bytes into the write's buffer; true once it is complete and dispatched. */
  private receivePayload(p: Payload): boolean {
    const n = p.req.data ? this.queue.copyInto(p.req.data, p.req.length - p.left, p.left) : this.queue.skip(p.left);
    p.left -= n;
    if (p.left > 0) return false;
    this.payload = null;
    this.dispatch(p.req);
    return true;
  }

  /** Runs a request: inline on the backend's synchronous calls when the policy allows, else asynchronously. */
  private dispatch(req: Request): void {
    const { session, limits, shuttingDown, inline, activity } = this.ctx;
    const backend = session.export.backend;
    try {
      if (shuttingDown()) throw new RequestError(ERRNO.ESHUTDOWN, 'server is shutting down');
      checkRequest(req, session.transmissionFlags, backend, limits.maxRequest);
      this.checkLease(req);
      if (inline && !(req.flags & CMD_FLAG.FUA)) {
        const others = activity.inflight > 1;
        if (req.type === CMD.READ && backend.readSync) {
          const buf = this.replies.readBuffer(req.length);
          if (inline.run(req.length, others, () => backend.readSync!(buf.data, req.offset))) return this.sendRead(req, buf);
          this.replies.dropRead(buf);
        } else if (req.type === CMD.WRITE && backend.writeSync && inline.run(req.length, others, () => backend.writeSync!(req.data!, req.offset))) {
          this.replies.ok(req);
          return this.release(req);
        }
      }
    } catch (err) {
      return this.fail(req, err);
    }
    void this.dispatchAsync(req);
  }

  /** Writes, trims and zeroes need the export's lease when someone holds it (nbd/lease.ts); reads never do. */
  private checkLease(req: Request): void {
    if (req.type !== CMD.WRITE && req.type !== CMD.TRIM && req.type !== CMD.WRITE_ZEROES) return;
    const { session, leases } = this.ctx;
    const holder = leases?.holder(session.export.name) ?? null;
    if (holder !== null && holder !== session.leaseToken) throw new RequestError(ERRNO.EPERM, 'another client holds the lease of this export');
  }

  private async dispatchAsync(req: Request): Promise<void> {
    const backend = this.ctx.session.export.backend;
    try {
      switch (req.type) {
        case CMD.READ: {
          const buf = this.replies.readBuffer(req.length);
          try {
            if (req.length) await backend.read(buf.data, req.offset);
            if (req.flags & CMD_FLAG.FUA) await backend.flush();
          } catch (err) {
            this.replies.dropRead(buf);
            throw err;
          }
          return this.sendRead(req, buf);
        }
        case CMD.WRITE:
          if (req.length) await backend.write(req.data!, req.offset);
          break;
        case CMD.FLUSH:
          await backend.flush();
          break;
        case CMD.TRIM:
          if (req.length) await backend.trim(req.offset, req.length);
          break;
        case CMD.WRITE_ZEROES:
          if (req.length) await backend.writeZeroes(req.offset, req.length);
          break;
      }
      if (req.flags & CMD_FLAG.FUA && req.type !== CMD.FLUSH) await backend.flush();
      this.replies.ok(req);
      this.release(req);
    } catch (err) {
      this.fail(req, err);
    }
    this.watchQueuedReplies();
  }

  /** A read's bytes stay counted until the kernel has them. */
  private sendRead(req: Request, buf: ReadBuffer): void {
    this.replies.read(req, buf, () => this.release(req));
  }

  private fail(req: Request, err: unknown): void {
    const { log } = this.ctx;
    let errno: number;
    if (err instanceof RequestError) errno = err.errno;
    else {
      const e = err as NodeJS.ErrnoException;
      log.error({ err: e.message, type: req.type, offset: req.offset }, 'backend error');
      errno = e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === 'EFBIG' ? ERRNO.ENOSPC : ERRNO.EIO;
    }
    const message = (err as Error).message;
    log.debug({ type: req.type, offset: req.offset, length: req.length, errno: errnoName(errno) }, message);
    this.replies.error(req, errno, message, req.type === CMD.READ);
    this.release(req);
  }

  /** Ends a request's hold on the limits, and lets a stalled request or DISC go on. */
  private release(req: Request): void {
    if (req.released) return;
    req.released = true;
    if (req.data) this.ctx.pool.put(req.data);
    this.inflight--;
    this.inflightBytes -= req.bytes;
    this.ctx.activity.inflight--;
    if (req.bytes) this.ctx.limits.budget.give(req.bytes);
    if (this.ending) return this.finishWhenIdle();
    const s = this.stalled;
    if (s && this.stalledOn === 'slot' && !this.closed) {
      this.stalled = null;
      if (this.admit(s)) {
        this.proceed(s);
        this.pump();
      }
    }
  }

  /**
   * A client that does not read its replies gets no more requests served until it
   * does. Read data waiting in the queue is already counted (and bounded) as bytes
   * in flight; this bounds the rest: replies without data, error messages.
   */
  private watchQueuedReplies(): void {
    if (this.waitingForDrain || this.closed || this.socket.writableLength - this.inflightBytes <= MAX_QUEUED_REPLIES) return;
    this.waitingForDrain = true;
    this.socket.pause();
    this.socket.once('drain', () => {
      this.waitingForDrain = false;
      this.pump();
    });
  }

  private finishWhenIdle(): void {
    if (this.inflight === 0) this.finish();
  }

  private finish(): void {
    this.ending = true;
    this.done();
  }

  private onClose(): void {
    this.closed = true;
    const p = this.payload;
    if (p) {
      this.payload = null;
      this.release(p.req); // admitted, but its payload will never arrive
    }
    this.done();
  }
}
