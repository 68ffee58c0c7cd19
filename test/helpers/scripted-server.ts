/**
 * A scripted NBD server on a real TCP socket, for testing a client against a
 * misbehaving peer: each connection plays an async script of byte exchanges
 * (read exactly these bytes, send exactly those), with helpers for the usual
 * handshake so a script spells out only where it goes wrong.
 */
import net from 'node:net';
import { once } from 'node:events';
import { SocketReader } from '../../nbd/socket-reader.ts';
import {
  NBDMAGIC, IHAVEOPT, OPTION_REPLY_MAGIC, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, OPT, REP, INFO, TF,
  REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
} from '../../nbd/constants.ts';
import { u16, u32, u64 } from './raw-peer.ts';

export interface Request {
  type: number;
  flags: number;
  handle: Buffer;
  offset: number;
  length: number;
  payload?: Buffer;
}

export interface HandshakeOptions {
  size?: number;
  flags?: number;
  /** Answer NBD_OPT_STRUCTURED_REPLY with ACK (default) or NBD_REP_ERR_UNSUP. */
  structured?: boolean;
  blockSize?: [number, number, number];
}

/** The server's end of one connection, as a script sees it. */
export class ScriptPeer {
  readonly reader: SocketReader;
  /** Bytes handed to the socket so far. */
  sent = 0;
  /** Resolves when the client closes or drops the connection. */
  readonly clientGone: Promise<void>;

  constructor(readonly socket: net.Socket) {
    this.reader = new SocketReader(socket, 1024 * 1024);
    this.clientGone = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => {});
  }

  send(...parts: Buffer[]): boolean {
    const b = Buffer.concat(parts);
    this.sent += b.length;
    return this.socket.destroyed ? false : this.socket.write(b);
  }

  read(n: number): Promise<Buffer> {
    return this.reader.read(n);
  }

  /** Sends the fixed newstyle greeting and reads the client's flags. */
  async greet(flags = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES): Promise<number> {
    this.send(u64(NBDMAGIC), u64(IHAVEOPT), u16(flags));
    return (await this.read(4)).readUInt32BE(0);
  }

  async option(): Promise<{ opt: number; data: Buffer }> {
    const h = await this.read(16);
    if (h.readBigUInt64BE(0) !== IHAVEOPT) throw new Error('client sent a bad option magic');
    return { opt: h.readUInt32BE(8), data: await this.read(h.readUInt32BE(12)) };
  }

  /** Reads the next option and checks it is `expected`. */
  async expectOption(expected: number): Promise<Buffer> {
    const { opt, data } = await this.option();
    if (opt !== expected) throw new Error(`client sent option ${opt}, script expected ${expected}`);
    return data;
  }

  reply(opt: number, type: number, data: Buffer = Buffer.alloc(0), length = data.length): void {
    this.send(u64(OPTION_REPLY_MAGIC), u32(opt), u32(type), u32(length), data);
  }

  infoExport(size: number, flags: number): Buffer {
    return Buffer.concat([u16(INFO.EXPORT), u64(BigInt(size)), u16(flags)]);
  }

  /** Greeting, structured replies, and NBD_OPT_GO answered with export info: a well-behaved start. */
  async handshake(o: HandshakeOptions = {}): Promise<void> {
    await this.greet();
    await this.expectOption(OPT.STRUCTURED_REPLY);
    this.reply(OPT.STRUCTURED_REPLY, o.structured === false ? REP.ERR_UNSUP : REP.ACK);
    await this.expectOption(OPT.GO);
    this.reply(OPT.GO, REP.INFO, this.infoExport(o.size ?? 1024 * 1024, o.flags ?? TF.HAS_FLAGS | TF.SEND_FLUSH));
    if (o.blockSize) this.reply(OPT.GO, REP.INFO, Buffer.concat([u16(INFO.BLOCK_SIZE), ...o.blockSize.map(u32)]));
    this.reply(OPT.GO, REP.ACK);
  }

  async request(): Promise<Request> {
    const h = await this.read(28);
    if (h.readUInt32BE(0) !== REQUEST_MAGIC) throw new Error('client sent a bad request magic');
    const r: Request = {
      flags: h.readUInt16BE(4),
      type: h.readUInt16BE(6),
      handle: Buffer.from(h.subarray(8, 16)),
      offset: Number(h.readBigUInt64BE(16)),
      length: h.readUInt32BE(24),
    };
    if (r.type === 1) r.payload = await this.read(r.length);
    return r;
  }

  simple(handle: Buffer, errno = 0, data: Buffer = Buffer.alloc(0)): void {
    this.send(u32(SIMPLE_REPLY_MAGIC), u32(errno), handle, data);
  }

  /** One structured reply chunk; `length` may lie about the body that follows. */
  chunk(handle: Buffer, flags: number, type: number, body: Buffer = Buffer.alloc(0), length = body.length): void {
    this.send(u32(STRUCTURED_REPLY_MAGIC), u16(flags), u16(type), handle, u32(length), body);
  }

  /**
   * Sends filler bytes until `limit` have gone or the client hangs up; returns
   * how many went. Shows that a client refusing a huge claim stops reading.
   */
  async flood(limit: number): Promise<number> {
    const block = Buffer.alloc(256 * 1024, 0x5a);
    let gone = false;
    void this.clientGone.then(() => (gone = true));
    let n = 0;
    while (n < limit && !gone && !this.socket.destroyed) {
      n += block.length;
      if (!this.send(block)) await Promise.race([once(this.socket, 'drain').catch(() => {}), this.clientGone]);
    }
    return n;
  }
}

export type Script = (peer: ScriptPeer) => Promise<void>;

/** Runs one script per accepted connection, in order; the last one repeats. */
export class ScriptedServer {
  /** What each connection's script ended with: undefined, or the error it threw. */
  readonly outcomes: Promise<Error | undefined>[] = [];
  readonly peers: ScriptPeer[] = [];
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly server: net.Server, readonly port: number) {}

  static async start(...scripts: Script[]): Promise<ScriptedServer> {
    let self: ScriptedServer | null = null;
    const server = net.createServer((socket) => {
      const s = self!;
      s.sockets.add(socket);
      socket.on('close', () => s.sockets.delete(socket));
      socket.setNoDelay(true);
      const peer = new ScriptPeer(socket);
      const script = scripts[Math.min(s.peers.length, scripts.length - 1)];
      s.peers.push(peer);
      s.outcomes.push(script(peer).then(() => undefined, (err: Error) => err));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    self = new ScriptedServer(server, (server.address() as net.AddressInfo).port);
    return self;
  }

  uri(exportName = ''): string {
    return `nbd://127.0.0.1:${this.port}/${encodeURIComponent(exportName)}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}
