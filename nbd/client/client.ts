/**
 * An NBD client: connects by URI, pipelines up to `maxInflight` requests on one
 * connection, matches replies by handle, and reassembles structured read replies
 * straight into the caller's buffer. Used by the storage layer as a block backend.
 */
import net from 'node:net';
import { TLSSocket } from 'node:tls';
import { once } from 'node:events';
import {
  CMD, CMD_FLAG, TF, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE,
  REPLY_TYPE, isErrorChunk, ERRNO,
} from '../constants.ts';
import { ByteQueue } from '../byte-queue.ts';
import { NbdError, NbdRequestError } from '../errors.ts';
import { SocketReader } from '../socket-reader.ts';
import { parseNbdUri, formatNbdUri, type NbdAddress } from '../uri.ts';
import { negotiateClient, listExports, requestLease, type ExportInfo } from './negotiation.ts';
import type { LeaseOp, LeaseState } from '../lease.ts';
import { loadPsk, loadX509, type ClientTlsParams } from '../tls.ts';

export interface NbdClientOptions {
  /** Requests in flight on the connection at once (default 64). */
  maxInflight?: number;
  /** Give up connecting and negotiating (TLS included) after this long in all (default 10 s). */
  connectTimeoutMs?: number;
  /** TLS credentials and parameters; default: from an nbds:// URI's query, none for nbd://. */
  tls?: ClientTlsParams;
  signal?: AbortSignal;
  /**
   * Acquire the export's lease with this token before GO (nbd/lease.ts): the
   * connection then writes as its holder. Refused (NBD_LEASE_HELD) when another
   * token holds it; a server without leases is used as is.
   */
  leaseToken?: string;
}

/** A lease operation by itself: which, by which token, at which epoch, to whom. */
export interface LeaseCall {
  op: LeaseOp;
  token?: string;
  epoch?: number;
  to?: string;
}

const COMMAND_NAMES: Record<number, string> = {
  [CMD.READ]: 'read', [CMD.WRITE]: 'write', [CMD.FLUSH]: 'flush', [CMD.TRIM]: 'trim', [CMD.WRITE_ZEROES]: 'write-zeroes',
};
/** Payload of non-data structured chunks (errors, holes) is small; more means a broken peer. */
const MAX_SMALL_CHUNK = 64 * 1024;

interface Pending {
  cmd: number;
  offset: number;
  length: number;
  target?: Uint8Array;
  received: number;
  error?: NbdError;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Bytes of a read payload still to copy into a request's target. */
interface PayloadCopy {
  pending: Pending;
  handle: number;
  pos: number;
  left: number;
  last: boolean; // the chunk carried NBD_REPLY_FLAG_DONE (or was a simple reply)
}

/**
 * Chooses where each socket read lands. While a read payload is being received,
 * the kernel copies it straight into the caller's buffer (net's `onread` with a
 * buffer generator); everything else goes through a scratch buffer. This removes
 * one memcpy per byte, the client's main cost in `npm run bench -- nbd`.
 */
class Receiver {
  private readonly scratch = Buffer.allocUnsafe(256 * 1024);
  private current: Uint8Array = this.scratch;
  /** Where the next read may land directly, or null for the scratch buffer. */
  target: () => Uint8Array | null = () => null;
  /** Receives each read; `direct` means it already sits in the target. Scratch bytes must be copied to be kept. */
  sink: (chunk: Buffer, direct: boolean) => void = () => {};
  readonly onread = {
    buffer: (): Uint8Array => (this.current = this.target() ?? this.scratch),
    callback: (n: number, buf: Uint8Array): boolean => {
      this.sink(Buffer.from(buf.buffer, buf.byteOffset, n), this.current !== this.scratch);
      return true; // keep reading: replies are bounded by the requests we sent
    },
  };
}

async function openSocket(address: NbdAddress, opts: NbdClientOptions, deadline: number, receiver?: Receiver): Promise<net.Socket> {
  const onread = receiver?.onread;
  const socket = address.transport === 'tcp' ? net.connect({ port: address.port, host: address.host, onread }) : net.connect({ path: address.socket, onread });
  const where = formatNbdUri(address);
  try {
    await beforeDeadline(socket, deadline, once(socket, 'connect', { signal: opts.signal }), () => new Error(`timed out after ${opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT} ms`));
  } catch (err) {
    socket.destroy();
    const e = err as NodeJS.ErrnoException;
    throw new NbdError('NBD_CONNECT_FAILED', `cannot connect to ${where}: ${e.code ?? e.message}`, { cause: err });
  }
  socket.setNoDelay(true);
  return socket;
}

const DEFAULT_CONNECT_TIMEOUT = 10_000;

/** TLS settings from a URI's parameters (libnbd's names), loading the credentials they name. */
function clientTlsOf(address: NbdAddress): ClientTlsParams | undefined {
  const t = address.tls;
  if (!t) return undefined;
  const credentials = t.pskFile ? loadPsk(t.pskFile) : loadX509(t.certificates!, 'client');
  const servername = t.hostname ?? (address.transport === 'tcp' ? address.host : undefined);
  return { credentials, identity: t.username, servername, verifyPeer: t.verifyPeer };
}

/** Settles as `work` does, unless the deadline passes first: then the socket is dropped and timeout() thrown. */
async function beforeDeadline<T>(socket: net.Socket, deadline: number, work: Promise<T>, timeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(timeout());
      socket.destroy();
    }, Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

export class NbdClient {
  readonly uri: string;
  readonly size: number;
  readonly transmissionFlags: number;
  readonly blockSize: ExportInfo['blockSize'];
  readonly structuredReplies: boolean;
  /** The TLS version in use (e.g. 'TLSv1.3'), or null without TLS. */
  readonly tls: string | null;
  /** The lease acquired at connect (opts.leaseToken), or null. */
  readonly lease: LeaseState | null;

  private readonly pending = new Map<number, Pending>();
  private readonly queue = new ByteQueue();
  private payload: PayloadCopy | null = null;
  private nextHandle = 1;
  private inflight = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private drained: Promise<void> | null = null;
  private corked = false;
  private failure: NbdError | null = null;
  private closing = false;
  private readonly maxInflight: number;

  private constructor(
    private readonly socket: net.Socket,
    readonly address: NbdAddress,
    info: ExportInfo,
    lease: LeaseState | null,
    leftover: Buffer[],
    receiver: Receiver | null,
    opts: NbdClientOptions,
  ) {
    this.uri = formatNbdUri(address);
    this.size = info.size;
    this.transmissionFlags = info.transmissionFlags;
    this.blockSize = info.blockSize;
    this.structuredReplies = info.structuredReplies;
    this.tls = socket instanceof TLSSocket ? socket.getProtocol() : null;
    this.lease = lease;
    this.maxInflight = opts.maxInflight ?? 64;
    for (const c of leftover) this.queue.push(c);
    if (receiver) {
      receiver.target = () => this.directTarget();
      receiver.sink = (chunk, direct) => this.onChunk(chunk, direct, false);
    } else {
      socket.on('data', (chunk: Buffer) => this.onChunk(chunk, false, true)); // TLS: decrypted chunks are ours to keep
    }
    socket.on('error', (err) => this.fail(new NbdError('NBD_CLOSED', `connection to ${this.uri} failed: ${err.message}`, { cause: err })));
    socket.on('close', () => this.fail(new NbdError('NBD_CLOSED', `connection to ${this.uri} closed`)));
    this.parse();
  }

  /**
   * Connects and negotiates. TLS comes from an nbds:// URI's parameters, or from
   * opts.tls; without TLS, reads land straight in callers' buffers (Receiver).
   */
  static async connect(uri: string | NbdAddress, opts: NbdClientOptions = {}): Promise<NbdClient> {
    const address = typeof uri === 'string' ? parseNbdUri(uri) : uri;
    const tls = opts.tls ?? clientTlsOf(address);
    const receiver = tls ? null : new Receiver();
    const where = formatNbdUri(address);
    const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT;
    const deadline = Date.now() + timeoutMs;
    const socket = await openSocket(address, opts, deadline, receiver ?? undefined);
    const reader = new SocketReader(socket, undefined, receiver !== null);
    if (receiver) receiver.sink = (chunk) => reader.push(Buffer.from(chunk)); // negotiation keeps copies: scratch is reused
    try {
      const negotiated = negotiateClient(socket, reader, address.exportName, tls, where, opts.leaseToken);
      const session = await beforeDeadline(socket, deadline, negotiated, () =>
        new NbdError('NBD_HANDSHAKE', `${where}: server did not finish negotiation within ${timeoutMs} ms`));
      return new NbdClient(session.socket, address, session.info, session.lease, session.reader.detach(), receiver, opts);
    } catch (err) {
      socket.destroy();
      if (err instanceof NbdError && err.code === 'NBD_CLOSED') {
        throw new NbdError('NBD_HANDSHAKE', `${where}: server closed the connection during negotiation`, { cause: err });
      }
      throw err;
    }
  }

  /** One lease operation on the URI's export, on a connection of its own; null when the server offers no leases. */
  static async leaseCall(uri: string | NbdAddress, call: LeaseCall, opts: NbdClientOptions = {}): Promise<LeaseState | null> {
    const address = typeof uri === 'string' ? parseNbdUri(uri) : uri;
    const tls = opts.tls ?? clientTlsOf(address);
    const where = formatNbdUri(address);
    const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT;
    const deadline = Date.now() + timeoutMs;
    const socket = await openSocket(address, opts, deadline);
    const req = { op: call.op, exportName: address.exportName, token: call.token ?? '', epoch: call.epoch ?? 0, to: call.to ?? '' };
    try {
      return await beforeDeadline(socket, deadline, requestLease(socket, new SocketReader(socket), req, tls, where), () =>
        new NbdError('NBD_HANDSHAKE', `${where}: server did not answer the lease request within ${timeoutMs} ms`));
    } catch (err) {
      if (err instanceof NbdError && err.code === 'NBD_CLOSED') {
        throw new NbdError('NBD_HANDSHAKE', `${where}: server closed the connection during the lease request`, { cause: err });
      }
      throw err;
    } finally {
      socket.end();
    }
  }

  /** The exports a server lists (NBD_OPT_LIST). */
  static async list(uri: string | NbdAddress, opts: NbdClientOptions = {}): Promise<{ name: string; description: string }[]> {
    const address = typeof uri === 'string' ? parseNbdUri(uri) : uri;
    const tls = opts.tls ?? clientTlsOf(address);
    const where = formatNbdUri(address);
    const timeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT;
    const deadline = Date.now() + timeoutMs;
    const socket = await openSocket(address, opts, deadline);
    try {
      return await beforeDeadline(socket, deadline, listExports(socket, new SocketReader(socket), tls, where), () =>
        new NbdError('NBD_HANDSHAKE', `${where}: server did not finish listing exports within ${timeoutMs} ms`));
    } catch (err) {
      if (err instanceof NbdError && err.code === 'NBD_CLOSED') {
        throw new NbdError('NBD_HANDSHAKE', `${where}: server closed the connection while listing exports`, { cause: err });
      }
      throw err;
    } finally {
      socket.end();
    }
  }

  get readOnly(): boolean { return (this.transmissionFlags & TF.READ_ONLY) !== 0; }
  get canFlush(): boolean { return (this.transmissionFlags & TF.SEND_FLUSH) !== 0; }
  get canFua(): boolean { return (this.transmissionFlags & TF.SEND_FUA) !== 0; }
  get canTrim(): boolean { return (this.transmissionFlags & TF.SEND_TRIM) !== 0; }
  get canWriteZeroes(): boolean { return (this.transmissionFlags & TF.SEND_WRITE_ZEROES) !== 0; }
  get canMultiConn(): boolean { return (this.transmissionFlags & TF.CAN_MULTI_CONN) !== 0; }
  get requestsInFlight(): number { return this.inflight; }

  async read(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    await this.readInto(out, offset);
    return out;
  }

  /** Fills target with the export's bytes at offset; large reads are split at the server's maximum. */
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    this.checkRange('read', offset, target.length);
    await this.split(offset, target.length, (o, n, at) => this.submit(CMD.READ, 0, o, n, undefined, target.subarray(at, at + n)));
  }

  async write(offset: number, data: Uint8Array, opts: { fua?: boolean } = {}): Promise<void> {
    this.checkRange('write', offset, data.length);
    const flags = opts.fua ? this.fuaFlag('write') : 0;
    await this.split(offset, data.length, (o, n, at) => this.submit(CMD.WRITE, flags, o, n, data.subarray(at, at + n)));
  }

  async flush(): Promise<void> {
    if (!this.canFlush) throw new NbdError('NBD_INVALID_ARGUMENT', `${this.uri} does not support flush`);
    await this.submit(CMD.FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number, opts: { fua?: boolean } = {}): Promise<void> {
    if (!this.canTrim) throw new NbdError('NBD_INVALID_ARGUMENT', `${this.uri} does not support trim`);
    this.checkRange('trim', offset, length);
    await this.submit(CMD.TRIM, opts.fua ? this.fuaFlag('trim') : 0, offset, length);
  }

  async writeZeroes(offset: number, length: number, opts: { fua?: boolean; noHole?: boolean } = {}): Promise<void> {
    if (!this.canWriteZeroes) throw new NbdError('NBD_INVALID_ARGUMENT', `${this.uri} does not support write-zeroes`);
    this.checkRange('write-zeroes', offset, length);
    const flags = (opts.fua ? this.fuaFlag('write-zeroes') : 0) | (opts.noHole ? CMD_FLAG.NO_HOLE : 0);
    await this.submit(CMD.WRITE_ZEROES, flags, offset, length);
  }

  /** Waits for requests in flight, sends NBD_CMD_DISC, and closes (a soft disconnect). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    while (this.inflight > 0 && !this.failure) await new Promise<void>((r) => this.slotWaiters.push(r));
    if (!this.failure && !this.socket.destroyed) {
      this.socket.write(this.header(CMD.DISC, 0, 0, 0, 0));
      this.socket.end();
      await once(this.socket, 'close').catch(() => {});
    }
    this.socket.destroy();
  }

  /** Drops the connection at once; pending requests fail. */
  destroy(): void {
    this.closing = true;
    this.socket.destroy();
  }

  private fuaFlag(what: string): number {
    if (!this.canFua) throw new NbdError('NBD_INVALID_ARGUMENT', `${this.uri} does not support FUA on ${what}`);
    return CMD_FLAG.FUA;
  }

  private checkRange(what: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > this.size) {
      throw new NbdError('NBD_INVALID_ARGUMENT', `${what} [${offset}, +${length}) is outside the export (${this.size} bytes)`);
    }
  }

  private async split(offset: number, length: number, one: (o: number, n: number, at: number) => Promise<void>): Promise<void> {
    const max = this.blockSize.maximum;
    if (length <= max) return one(offset, length, 0);
    const parts: Promise<void>[] = [];
    for (let at = 0; at < length; at += max) parts.push(one(offset + at, Math.min(max, length - at), at));
    await Promise.all(parts);
  }

  private header(cmd: number, flags: number, handle: number, offset: number, length: number): Buffer {
    const h = Buffer.allocUnsafe(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(cmd, 6);
    h.writeUInt32BE(0, 8);
    h.writeUInt32BE(handle, 12);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return h;
  }

  private async submit(cmd: number, flags: number, offset: number, length: number, data?: Uint8Array, target?: Uint8Array): Promise<void> {
    if (cmd === CMD.READ && length === 0) return;
    while (this.inflight >= this.maxInflight || this.drained) {
      if (this.failure) throw this.failure;
      if (this.drained) await this.drained;
      else await new Promise<void>((r) => this.slotWaiters.push(r));
    }
    if (this.failure) throw this.failure;
    const handle = this.allocHandle();
    this.inflight++;
    const done = new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { cmd, offset, length, target, received: 0, resolve, reject });
    });
    this.cork();
    this.socket.write(this.header(cmd, flags, handle, offset, length));
    const ok = data && data.length ? this.socket.write(data) : true;
    if (!ok || this.socket.writableNeedDrain) {
      this.drained ??= once(this.socket, 'drain').then(() => { this.drained = null; }, () => { this.drained = null; });
    }
    return done;
  }

  /** Requests submitted in one tick leave in one system call (a fetch queue issues dozens at once). */
  private cork(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    process.nextTick(() => {
      this.corked = false;
      this.socket.uncork();
    });
  }

  private allocHandle(): number {
    do {
      this.nextHandle = (this.nextHandle + 1) >>> 0 || 1;
    } while (this.pending.has(this.nextHandle));
    return this.nextHandle;
  }

  private complete(handle: number, p: Pending): void {
    this.pending.delete(handle);
    this.inflight--;
    if (p.error) p.reject(p.error);
    else if (p.cmd === CMD.READ && p.received !== p.length) {
      const err = new NbdError('NBD_PROTOCOL', `server finished a read with ${p.received} of ${p.length} bytes`);
      p.reject(err);
      return this.fail(err);
    } else p.resolve();
    const w = this.slotWaiters.shift();
    if (w) w();
  }

  private fail(err: NbdError): void {
    if (this.failure) return;
    this.failure = err;
    this.socket.destroy();
    const pending = [...this.pending.values()];
    this.pending.clear();
    this.inflight = 0;
    for (const p of pending) p.reject(err);
    for (const w of this.slotWaiters.splice(0)) w();
  }

  private directTarget(): Uint8Array | null {
    const c = this.payload;
    if (!c || !c.pending.target || c.left < 4096 || this.queue.length > 0) return null;
    return c.pending.target.subarray(c.pos, c.pos + c.left);
  }

  /** `owned`: the chunk is the caller's to keep (not the reusable scratch buffer). */
  private onChunk(chunk: Buffer, direct: boolean, owned: boolean): void {
    if (direct) {
      const c = this.payload!;
      c.pos += chunk.length;
      c.left -= chunk.length;
      c.pending.received += chunk.length;
      if (c.left === 0) {
        this.payload = null;
        if (c.last) this.complete(c.handle, c.pending);
      }
      return;
    }
    this.queue.push(chunk);
    this.parse();
    // What parse could not consume still points into the scratch buffer: keep a copy.
    if (!owned && this.queue.length > 0) for (const rest of this.queue.drain()) this.queue.push(Buffer.from(rest));
  }

  /** Consumes replies from the queue as far as the bytes go. */
  private parse(): void {
    const q = this.queue;
    while (!this.failure) {
      if (this.payload) {
        const c = this.payload;
        const n = c.pending.target ? q.copyInto(c.pending.target, c.pos, c.left) : q.skip(c.left);
        c.pos += n;
        c.left -= n;
        c.pending.received += n;
        if (c.left > 0) return;
        this.payload = null;
        if (c.last) this.complete(c.handle, c.pending);
        continue;
      }
      if (q.length < 4) return;
      const magic = q.peek(4).readUInt32BE(0);
      if (magic === SIMPLE_REPLY_MAGIC) {
        if (q.length < 16) return;
        const h = q.take(16);
        const errno = h.readUInt32BE(4);
        const handle = this.lookup(h, 8);
        if (handle === null) return;
        const p = this.pending.get(handle)!;
        if (errno !== 0) {
          p.error = new NbdRequestError(COMMAND_NAMES[p.cmd] ?? `command ${p.cmd}`, errno);
          this.complete(handle, p);
        } else if (p.cmd === CMD.READ && this.structuredReplies) {
          // With structured replies a read's data comes in chunks: where a simple payload ends is unknowable.
          return this.fail(new NbdError('NBD_PROTOCOL', `simple reply with data to a read from ${this.uri}, after structured replies were agreed`));
        } else if (p.cmd === CMD.READ) {
          this.payload = { pending: p, handle, pos: 0, left: p.length, last: true };
        } else this.complete(handle, p);
      } else if (magic === STRUCTURED_REPLY_MAGIC) {
        if (!this.structuredReplies) return this.fail(new NbdError('NBD_PROTOCOL', `structured reply from ${this.uri}, which were not agreed`));
        if (q.length < 20) return;
        const peek = q.peek(20);
        const type = peek.readUInt16BE(6);
        const length = peek.readUInt32BE(16);
        if (type === REPLY_TYPE.OFFSET_DATA) {
          if (length < 9) return this.fail(new NbdError('NBD_PROTOCOL', `data chunk of ${length} bytes`));
          if (q.length < 28) return;
          this.onDataChunk(q.take(28));
        } else {
          if (length > MAX_SMALL_CHUNK) return this.fail(new NbdError('NBD_PROTOCOL', `structured reply chunk type ${type} of ${length} bytes`));
          if (q.length < 20 + length) return;
          const h = q.take(20);
          this.onSmallChunk(h, q.take(length));
        }
      } else {
        return this.fail(new NbdError('NBD_PROTOCOL', `bad reply magic 0x${magic.toString(16)} from ${this.uri}`));
      }
    }
  }

  private lookup(h: Buffer, at: number): number | null {
    const handle = h.readUInt32BE(at + 4);
    if (h.readUInt32BE(at) !== 0 || !this.pending.has(handle)) {
      this.fail(new NbdError('NBD_PROTOCOL', `reply for unknown handle from ${this.uri}`));
      return null;
    }
    return handle;
  }

  private onDataChunk(h: Buffer): void {
    const handle = this.lookup(h, 8);
    if (handle === null) return;
    const p = this.pending.get(handle)!;
    const dataLength = h.readUInt32BE(16) - 8;
    const at = Number(h.readBigUInt64BE(20)) - p.offset;
    if (p.cmd !== CMD.READ || at < 0 || at + dataLength > p.length) {
      return this.fail(new NbdError('NBD_PROTOCOL', `data chunk outside its read request from ${this.uri}`));
    }
    const last = (h.readUInt16BE(4) & REPLY_FLAG_DONE) !== 0;
    this.payload = { pending: p, handle, pos: at, left: dataLength, last };
  }

  private onSmallChunk(h: Buffer, body: Buffer): void {
    const handle = this.lookup(h, 8);
    if (handle === null) return;
    const p = this.pending.get(handle)!;
    const flags = h.readUInt16BE(4);
    const type = h.readUInt16BE(6);
    const name = COMMAND_NAMES[p.cmd] ?? `command ${p.cmd}`;
    if (type === REPLY_TYPE.OFFSET_HOLE) {
      if (body.length !== 12) return this.fail(new NbdError('NBD_PROTOCOL', 'hole chunk of wrong length'));
      const at = Number(body.readBigUInt64BE(0)) - p.offset;
      const n = body.readUInt32BE(8);
      if (p.cmd !== CMD.READ || at < 0 || at + n > p.length || n === 0) {
        return this.fail(new NbdError('NBD_PROTOCOL', 'hole chunk outside its read request'));
      }
      p.target?.fill(0, at, at + n);
      p.received += n;
    } else if (isErrorChunk(type)) {
      if (body.length < 6) return this.fail(new NbdError('NBD_PROTOCOL', 'error chunk too short'));
      const errno = body.readUInt32BE(0) || ERRNO.EIO;
      const msgLength = body.readUInt16BE(4);
      if (msgLength > body.length - 6) return this.fail(new NbdError('NBD_PROTOCOL', 'error message overruns its chunk'));
      p.error ??= new NbdRequestError(name, errno, body.toString('utf8', 6, 6 + msgLength) || undefined);
    } else if (type !== REPLY_TYPE.NONE) {
      return this.fail(new NbdError('NBD_PROTOCOL', `unexpected structured reply type ${type}`));
    }
    if (flags & REPLY_FLAG_DONE) this.complete(handle, p);
  }
}
