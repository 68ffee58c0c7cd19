/**
 * A framed, bi-directional connection over one TCP socket. Sends respect
 * back-pressure (a send waits while the socket's buffer is full); every byte
 * written is counted, since link bytes are what a migration is judged by.
 */
import net from 'node:net';
import { once } from 'node:events';
import { SocketReader } from '../../nbd/socket-reader.ts';
import { FRAME_HEADER, MAX_FRAME, FRAME_NAMES, FRAME, WireError } from './frames.ts';

export interface Frame {
  type: number;
  flags: number;
  payload: Buffer;
}

export class Connection {
  private readonly reader: SocketReader;
  /** The largest frame accepted. A destination raises it once HELLO says how big the guest is. */
  maxFrame = MAX_FRAME;
  bytesSent = 0;
  bytesReceived = 0;
  private closed = false;

  constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    this.reader = new SocketReader(socket);
    socket.on('error', () => {}); // surfaced through read()/send() as WireError
  }

  static async connect(host: string, port: number, timeoutMs = 10_000, signal?: AbortSignal): Promise<Connection> {
    const socket = net.connect(port, host);
    try {
      await Promise.race([
        once(socket, 'connect', { signal }),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs).unref()),
      ]);
    } catch (err) {
      socket.destroy();
      const e = err as NodeJS.ErrnoException;
      throw new WireError('MIGRATE_CONNECT_FAILED', `cannot reach the destination tcp://${host}:${port}: ${e.code ?? e.message}`);
    }
    return new Connection(socket);
  }

  /** Sends one frame; resolves when the socket can take more. */
  async send(type: number, payload: Buffer | string = Buffer.alloc(0), flags = 0): Promise<void> {
    if (this.closed || this.socket.destroyed) throw new WireError('MIGRATE_LINK_LOST', 'the migration link is closed');
    const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
    const h = Buffer.allocUnsafe(FRAME_HEADER);
    h.writeUInt16BE(type, 0);
    h.writeUInt16BE(flags, 2);
    h.writeUInt32BE(body.length, 4);
    this.socket.cork();
    this.socket.write(h);
    const ok = body.length ? this.socket.write(body) : true;
    this.socket.uncork();
    this.bytesSent += FRAME_HEADER + body.length;
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
      const onClose = () => done(new WireError('MIGRATE_LINK_LOST', 'the migration link closed while sending'));
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }

  sendJson(type: number, value: unknown): Promise<void> {
    return this.send(type, JSON.stringify(value));
  }

  /** Reads the next frame; a malformed header is a protocol error, never a guess. */
  async read(): Promise<Frame> {
    let h: Buffer;
    try {
      h = await this.reader.read(FRAME_HEADER);
    } catch {
      throw new WireError('MIGRATE_LINK_LOST', 'the migration link closed');
    }
    const type = h.readUInt16BE(0);
    const length = h.readUInt32BE(4);
    if (type === 0 || !FRAME_NAMES[type]) throw new WireError('MIGRATE_PROTOCOL', `unknown frame type ${type}`);
    if (length > this.maxFrame) throw new WireError('MIGRATE_PROTOCOL', `frame ${FRAME_NAMES[type]} of ${length} bytes exceeds ${this.maxFrame}`);
    let payload: Buffer;
    try {
      payload = await this.reader.read(length);
    } catch {
      throw new WireError('MIGRATE_LINK_LOST', 'the migration link closed mid-frame');
    }
    this.bytesReceived += FRAME_HEADER + length;
    return { type, flags: h.readUInt16BE(2), payload };
  }

  async readJson<T>(expect: number): Promise<T> {
    const f = await this.read();
    if (f.type === FRAME.ERROR) {
      const e = parseJson<{ code: string; message: string }>(f);
      throw new WireError(e.code, `peer: ${e.message}`);
    }
    if (f.type !== expect) throw new WireError('MIGRATE_PROTOCOL', `expected ${FRAME_NAMES[expect]}, got ${FRAME_NAMES[f.type]}`);
    return parseJson<T>(f);
  }

  close(): void {
    this.closed = true;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }
}

export function parseJson<T>(f: Frame): T {
  try {
    return JSON.parse(f.payload.toString('utf8')) as T;
  } catch {
    throw new WireError('MIGRATE_PROTOCOL', `${FRAME_NAMES[f.type]} payload is not valid JSON`);
  }
}
