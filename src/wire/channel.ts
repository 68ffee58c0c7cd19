/**
 * A framed, bi-directional channel over one stream socket (TCP, a Unix socket,
 * or TLS over either: src/wire/transport/ makes it). Sends respect
 * back-pressure: a send waits while the socket's buffer is full. Reads check each header before the payload
 * is taken: an unknown type, a type this state does not allow, or a length over
 * the type's limit for this guest ends the channel with MIGRATE_PROTOCOL, so a
 * peer cannot make this side hold more than one bounded frame. Every byte is
 * counted: link bytes are what a migration is judged by.
 */
import net from 'node:net';
import { once } from 'node:events';
import { SocketReader } from '../../nbd/index.ts';
import { LivemigError, ERROR_CODES, type ErrorCode } from '../errors.ts';
import { FRAMES, FRAME_BY_TYPE, FRAME_HEADER_BYTES, TIMEOUT, frameLimit, type FrameName } from './protocol.ts';
import { decodePayload, encodePayload, type Message, type MessageOf } from './codec.ts';
import type { ErrorBody } from './messages.ts';

/** Bytes read ahead of the engine before the socket is paused. */
const READ_AHEAD = 8 * 1024 * 1024;

/** A peer's ERROR as an error of ours: its code if it is one we know, else MIGRATE_FAILED. */
export function peerError(e: ErrorBody, who: string): LivemigError {
  const code = (e.code in ERROR_CODES ? e.code : 'MIGRATE_FAILED') as ErrorCode;
  return new LivemigError(code, `${who}: ${e.message}`);
}

export class Channel {
  private readonly reader: SocketReader;
  /** The guest's memory size once HELLO is accepted: frames that grow with the guest are bounded by it. */
  memoryBytes = 0;
  /** Frame types this side accepts now (null: any the protocol knows). */
  private allowed: ReadonlySet<string> | null = null;
  bytesSent = 0;
  bytesReceived = 0;
  private closed = false;

  /** `raw` is the TCP or Unix socket under `socket` when that is TLS: its counts include TLS's bytes. */
  constructor(readonly socket: net.Socket, private readonly raw: net.Socket = socket) {
    raw.setNoDelay(true);
    raw.setKeepAlive(true, TIMEOUT.KEEPALIVE);
    this.reader = new SocketReader(socket, READ_AHEAD);
    socket.on('error', () => {}); // surfaced through read()/send()
  }

  static async connect(host: string, port: number, timeoutMs: number = TIMEOUT.CONNECT, signal?: AbortSignal): Promise<Channel> {
    const socket = net.connect(port, host);
    try {
      await Promise.race([
        once(socket, 'connect', { signal }),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs).unref()),
      ]);
    } catch (err) {
      socket.destroy();
      const e = err as NodeJS.ErrnoException;
      throw new LivemigError('MIGRATE_CONNECT_FAILED', `cannot reach the destination tcp://${host}:${port}: ${e.code ?? e.message}`);
    }
    return new Channel(socket);
  }

  /** Bytes that crossed the link both ways, as the network carries them (frames plus TLS records and handshake). */
  get wireBytes(): number {
    return this.raw.bytesRead + this.raw.bytesWritten;
  }

  /** Bytes that arrived from the peer so far, whole frames or not: a slow frame still shows the peer is alive. */
  get bytesArrived(): number {
    return this.raw.bytesRead;
  }

  /** Accept only these frame types from now on (ERROR is always accepted). */
  only(names: readonly FrameName[] | null): void {
    this.allowed = names ? new Set([...names, 'ERROR']) : null;
  }

  /** Sends one message; resolves when the socket can take more. */
  async send(m: Message): Promise<void> {
    if (this.closed || this.socket.destroyed) throw new LivemigError('MIGRATE_LINK_LOST', 'the migration link is closed');
    const body = encodePayload(m);
    const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
    h.writeUInt16BE(FRAMES[m.name].type, 0);
    h.writeUInt16BE(0, 2);
    h.writeUInt32BE(body.length, 4);
    this.socket.cork();
    this.socket.write(h);
    const ok = body.length ? this.socket.write(body) : true;
    this.socket.uncork();
    this.bytesSent += FRAME_HEADER_BYTES + body.length;
    if (!ok) await this.drained();
  }

  /**
   * Sends one frame whose payload is `parts` in order (a PAGES batch), with one
   * writev and no copy; the parts must not be reused until the socket has taken them.
   */
  async sendParts(name: FrameName, parts: readonly Uint8Array[]): Promise<void> {
    if (this.closed || this.socket.destroyed) throw new LivemigError('MIGRATE_LINK_LOST', 'the migration link is closed');
    let length = 0;
    for (const p of parts) length += p.length;
    const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
    h.writeUInt16BE(FRAMES[name].type, 0);
    h.writeUInt16BE(0, 2);
    h.writeUInt32BE(length, 4);
    this.socket.cork();
    let ok = this.socket.write(h);
    for (const p of parts) ok = this.socket.write(p) && ok;
    this.socket.uncork();
    this.bytesSent += FRAME_HEADER_BYTES + length;
    if (!ok) await this.drained();
  }

  /** Waits for the socket to drain, or fails if it closes first; leaves no listener behind. */
  private drained(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        this.socket.off('drain', onDrain);
        this.socket.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = () => done();
      const onClose = () => done(new LivemigError('MIGRATE_LINK_LOST', 'the migration link closed while sending'));
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }

  /** Reads the next message; a malformed, unexpected or oversized frame is a protocol error, never a guess. */
  async read(): Promise<Message> {
    const h = await this.reader.read(FRAME_HEADER_BYTES).catch(() => {
      throw new LivemigError('MIGRATE_LINK_LOST', 'the migration link closed');
    });
    const type = h.readUInt16BE(0);
    const length = h.readUInt32BE(4);
    const spec = FRAME_BY_TYPE.get(type);
    if (!spec) throw new LivemigError('MIGRATE_PROTOCOL', `unknown frame type ${type}`);
    if (this.allowed && !this.allowed.has(spec.name)) throw new LivemigError('MIGRATE_PROTOCOL', `unexpected frame ${spec.name} now`);
    const limit = frameLimit(spec, this.memoryBytes);
    if (length > limit) throw new LivemigError('MIGRATE_PROTOCOL', `frame ${spec.name} of ${length} bytes exceeds ${limit}`);
    const payload = await this.reader.read(length).catch(() => {
      throw new LivemigError('MIGRATE_LINK_LOST', 'the migration link closed mid-frame');
    });
    this.bytesReceived += FRAME_HEADER_BYTES + length;
    return decodePayload(type, payload);
  }

  /** Reads the next message, which must be `name`; an ERROR becomes the peer's error; bounded by timeoutMs. */
  async expect<K extends FrameName>(name: K, timeoutMs: number, who = 'peer'): Promise<MessageOf<K>['body']> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new LivemigError('MIGRATE_TIMEOUT', `no ${name} from the ${who} within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const m = await Promise.race([this.read(), timeout]);
      if (m.name === 'ERROR') throw peerError(m.body, who);
      if (m.name !== name) throw new LivemigError('MIGRATE_PROTOCOL', `expected ${name}, got ${m.name}`);
      return m.body as MessageOf<K>['body'];
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the channel after what was sent has gone out. */
  close(): void {
    this.closed = true;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /**
   * Ends the channel after this side's ERROR: what the peer still sends is read and
   * dropped for up to a second, so the kernel does not answer it with a reset that
   * could discard the ERROR before the peer reads it.
   */
  closeAfterError(): void {
    this.closed = true;
    this.reader.detach();
    this.socket.on('data', () => {}).resume();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }
}
