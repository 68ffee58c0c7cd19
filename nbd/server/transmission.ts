/**
 * The server side of the transmission phase for one connection. Requests are
 * dispatched as they arrive and answered in completion order (the protocol
 * allows any order); at most `maxInflight` run at once, and the socket is not
 * read further until one finishes, which pushes back on the client through TCP.
 */
import type { Socket } from 'node:net';
import {
  REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, CMD, CMD_FLAG, ERRNO,
  REPLY_FLAG_DONE, REPLY_TYPE, REQUEST_HEADER_SIZE, TF, errnoName,
} from '../constants.ts';
import type { SocketReader } from '../socket-reader.ts';
import type { Negotiated } from './negotiation.ts';
import type { Logger } from '../logger.ts';
import type { BufferPool } from '../buffer-pool.ts';
import type { ByteBudget } from './byte-budget.ts';

export interface TransmissionLimits {
  maxRequest: number;
  /** Requests in progress at once on one connection. */
  maxInflight: number;
  /** Bytes of read and write data in progress at once on one connection (one request may exceed it alone). */
  maxInflightBytes: number;
  /** The same, shared by every connection of the server. */
  budget: ByteBudget;
}

/** Replies queued in Node beyond this stop the reading of new requests until the client catches up. */
const MAX_QUEUED_REPLIES = 4 * 1024 * 1024;

interface Request {
  flags: number;
  type: number;
  handle: Buffer;
  offset: number;
  length: number;
  data?: Buffer;
  /** Data bytes counted against the limits until released. */
  bytes: number;
  released: boolean;
}

/** Which command flags each command may carry (anything else is EINVAL). */
function allowedFlags(type: number, tflags: number): number {
  const fua = tflags & TF.SEND_FUA ? CMD_FLAG.FUA : 0;
  switch (type) {
    case CMD.WRITE_ZEROES:
      return fua | CMD_FLAG.NO_HOLE;
    default:
      return fua; // FUA is accepted (and ignored where meaningless) on every command
  }
}

class RequestError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

export async function serveTransmission(
  socket: Socket,
  reader: SocketReader,
  session: Negotiated,
  limits: TransmissionLimits,
  log: Logger,
  shuttingDown: () => boolean,
  pool: BufferPool,
): Promise<void> {
  const backend = session.export.backend;
  const tflags = session.transmissionFlags;
  let inflight = 0;
  let inflightBytes = 0;
  let slotFree: (() => void) | null = null;
  let allDone: (() => void) | null = null;

  // Oversized requests are refused without a buffer, so they count nothing.
  const dataBytes = (type: number, length: number) => ((type === CMD.READ || type === CMD.WRITE) && length <= limits.maxRequest ? length : 0);
  const admitted = (bytes: number) =>
    inflight === 0 || (inflight < limits.maxInflight && inflightBytes + bytes <= limits.maxInflightBytes);

  /** Ends a request's hold on the limits: after its reply is queued, or for reads once the kernel has the data. */
  const release = (req: Request) => {
    if (req.released) return;
    req.released = true;
    inflight--;
    inflightBytes -= req.bytes;
    if (req.bytes) limits.budget.give(req.bytes);
    if (slotFree) {
      const f = slotFree;
      slotFree = null;
      f();
    }
    if (inflight === 0 && allDone) allDone();
  };
  const waitIdle = () => (inflight === 0 ? Promise.resolve() : new Promise<void>((r) => (allDone = r)));

  /** The read buffer is reusable, and its bytes stop counting, once the kernel has them. */
  const sent = (req: Request, data: Buffer) => () => {
    pool.put(data);
    release(req);
  };

  const sendSimple = (handle: Buffer, errno: number) => {
    if (socket.destroyed) return;
    const h = Buffer.allocUnsafe(16);
    h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(errno, 4);
    handle.copy(h, 8);
    socket.write(h);
  };

  const sendReadData = (req: Request, data: Buffer) => {
    const done = sent(req, data);
    if (socket.destroyed) return done();
    const handle = req.handle;
    if (!session.structuredReplies) {
      const h = Buffer.allocUnsafe(16);
      h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
      h.writeUInt32BE(0, 4);
      handle.copy(h, 8);
      socket.cork();
      socket.write(h);
      socket.write(data, done);
      socket.uncork();
      return;
    }
    const offset = req.offset;
    const h = Buffer.allocUnsafe(28);
    h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(REPLY_FLAG_DONE, 4);
    h.writeUInt16BE(data.length ? REPLY_TYPE.OFFSET_DATA : REPLY_TYPE.NONE, 6);
    handle.copy(h, 8);
    h.writeUInt32BE(data.length ? data.length + 8 : 0, 16);
    h.writeBigUInt64BE(BigInt(offset), 20);
    socket.cork();
    socket.write(data.length ? h : h.subarray(0, 20), data.length ? undefined : done);
    if (data.length) socket.write(data, done);
    socket.uncork();
  };

  const sendError = (req: Request, errno: number, message: string) => {
    log.debug({ type: req.type, offset: req.offset, length: req.length, errno: errnoName(errno) }, message);
    // Structured replies: a READ must be answered in structured form, with the message attached.
    if (!session.structuredReplies || req.type !== CMD.READ) return sendSimple(req.handle, errno);
    if (socket.destroyed) return;
    const msg = Buffer.from(message.slice(0, 1024));
    const h = Buffer.allocUnsafe(26 + msg.length);
    h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(REPLY_FLAG_DONE, 4);
    h.writeUInt16BE(REPLY_TYPE.ERROR, 6);
    req.handle.copy(h, 8);
    h.writeUInt32BE(6 + msg.length, 16);
    h.writeUInt32BE(errno, 20);
    h.writeUInt16BE(msg.length, 24);
    msg.copy(h, 26);
    socket.write(h);
  };

  /** Checks that do not touch the backend; throws RequestError with the spec's errno. */
  const validate = (req: Request) => {
    const known = [CMD.READ, CMD.WRITE, CMD.FLUSH, CMD.TRIM, CMD.WRITE_ZEROES] as number[];
    if (!known.includes(req.type)) throw new RequestError(ERRNO.EINVAL, `unsupported command ${req.type}`);
    if (req.flags & ~allowedFlags(req.type, tflags)) {
      throw new RequestError(ERRNO.EINVAL, `command flags 0x${req.flags.toString(16)} not valid for command ${req.type}`);
    }
    const writes = req.type === CMD.WRITE || req.type === CMD.TRIM || req.type === CMD.WRITE_ZEROES;
    if (writes && backend.readOnly) throw new RequestError(ERRNO.EPERM, 'export is read-only');
    if (req.type === CMD.FLUSH) {
      if (req.offset !== 0 || req.length !== 0) throw new RequestError(ERRNO.EINVAL, 'flush must have zero offset and length');
      return;
    }
    // doc/proto.md: a READ or WRITE over the advertised maximum payload gets EINVAL (EOVERFLOW is for
    // commands without payload); TRIM and WRITE_ZEROES may exceed it and are served in chunks.
    if ((req.type === CMD.READ || req.type === CMD.WRITE) && req.length > limits.maxRequest) {
      throw new RequestError(ERRNO.EINVAL, `request of ${req.length} bytes exceeds the maximum of ${limits.maxRequest}`);
    }
    if (req.offset + req.length > backend.size) {
      const errno = req.type === CMD.WRITE || req.type === CMD.WRITE_ZEROES ? ERRNO.ENOSPC : ERRNO.EINVAL;
      throw new RequestError(errno, `request [${req.offset}, +${req.length}) goes past the end of the export (${backend.size} bytes)`);
    }
  };

  const execute = async (req: Request) => {
    let handedOver = false; // a read's reply releases it once sent
    try {
      if (shuttingDown()) throw new RequestError(ERRNO.ESHUTDOWN, 'server is shutting down');
      validate(req);
      const fua = (req.flags & CMD_FLAG.FUA) !== 0;
      switch (req.type) {
        case CMD.READ: {
          const data = pool.get(req.length);
          try {
            if (req.length) await backend.read(data, req.offset);
          } catch (err) {
            pool.put(data);
            throw err;
          }
          handedOver = true;
          sendReadData(req, data);
          return;
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
      if (fua && req.type !== CMD.FLUSH) await backend.flush();
      sendSimple(req.handle, 0);
    } catch (err) {
      if (err instanceof RequestError) sendError(req, err.errno, err.message);
      else {
        const e = err as NodeJS.ErrnoException;
        log.error({ err: e.message, type: req.type, offset: req.offset }, 'backend error');
        sendError(req, e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === 'EFBIG' ? ERRNO.ENOSPC : ERRNO.EIO, e.message);
      }
    } finally {
      if (req.data) pool.put(req.data);
      if (!handedOver) release(req);
    }
  };

  for (;;) {
    const header = await reader.read(REQUEST_HEADER_SIZE);
    if (header.readUInt32BE(0) !== REQUEST_MAGIC) {
      log.warn({ magic: header.readUInt32BE(0) }, 'bad request magic; closing connection');
      return; // cannot resynchronise the stream: hard disconnect
    }
    const offset64 = header.readBigUInt64BE(16);
    const type = header.readUInt16BE(6);
    const length = header.readUInt32BE(24);
    const req: Request = {
      flags: header.readUInt16BE(4),
      type,
      handle: Buffer.from(header.subarray(8, 16)),
      // Offsets beyond 2^53 are past any export; clamp so the bounds check rejects them.
      offset: offset64 > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset64),
      length,
      bytes: dataBytes(type, length),
      released: false,
    };
    if (req.type === CMD.DISC) {
      await waitIdle(); // the spec: handle all outstanding requests, then close
      return;
    }
    while (!admitted(req.bytes)) await new Promise<void>((r) => (slotFree = r));
    if (req.bytes) await limits.budget.take(req.bytes);
    inflight++;
    inflightBytes += req.bytes;
    if (req.type === CMD.WRITE) {
      // The payload follows whatever the verdict; an oversized one is drained, not buffered.
      if (req.bytes === 0) await reader.skip(req.length);
      else {
        req.data = pool.get(req.length);
        try {
          await reader.readInto(req.data);
        } catch (err) {
          pool.put(req.data);
          release(req);
          throw err;
        }
      }
    }
    void execute(req);
    // A client that does not read its replies gets no more requests served.
    if (socket.writableLength > MAX_QUEUED_REPLIES) await drainedOrClosed(socket);
  }
}

function drainedOrClosed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}
