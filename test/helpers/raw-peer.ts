/** A raw socket for bad-input tests: send exact bytes, read exact replies, see the close. */
import net from 'node:net';
import { once } from 'node:events';
import { SocketReader } from '../../nbd/socket-reader.ts';
import {
  NBDMAGIC, IHAVEOPT, OPTION_REPLY_MAGIC, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, OPT, REP, REQUEST_MAGIC,
} from '../../nbd/constants.ts';

export class RawPeer {
  readonly reader: SocketReader;
  private closedFlag = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    this.reader = new SocketReader(socket);
    this.closed = new Promise((resolve) => socket.once('close', () => ((this.closedFlag = true), resolve())));
    socket.on('error', () => {});
  }

  /** A Unix socket path, or a TCP port on 127.0.0.1. */
  static async connect(where: string | number): Promise<RawPeer> {
    const s = typeof where === 'number' ? net.connect(where, '127.0.0.1') : net.connect(where);
    await once(s, 'connect');
    return new RawPeer(s);
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  send(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  /** Reads the greeting and answers with fixed newstyle + no zeroes. */
  async greet(clientFlags = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES): Promise<number> {
    const g = await this.reader.read(18);
    if (g.readBigUInt64BE(0) !== NBDMAGIC || g.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('bad greeting');
    this.send(u32(clientFlags));
    return g.readUInt16BE(16);
  }

  sendOption(opt: number, data: Buffer = Buffer.alloc(0), length = data.length): void {
    this.send(u64(IHAVEOPT), u32(opt), u32(length), data);
  }

  async optionReply(): Promise<{ opt: number; type: number; data: Buffer }> {
    const h = await this.reader.read(20);
    if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
    return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.reader.read(h.readUInt32BE(16)) };
  }

  /** Greets and enters transmission with NBD_OPT_GO; returns size and flags. */
  async go(exportName = '', structured = false): Promise<{ size: number; flags: number }> {
    await this.greet();
    if (structured) {
      this.sendOption(OPT.STRUCTURED_REPLY);
      await this.optionReply();
    }
    const name = Buffer.from(exportName);
    this.sendOption(OPT.GO, Buffer.concat([u32(name.length), name, u16(0)]));
    let size = -1;
    let flags = 0;
    for (;;) {
      const r = await this.optionReply();
      if (r.type === REP.INFO && r.data.readUInt16BE(0) === 0) {
        size = Number(r.data.readBigUInt64BE(2));
        flags = r.data.readUInt16BE(10);
      } else if (r.type === REP.ACK) return { size, flags };
      else if (r.type !== REP.INFO) throw new Error(`GO refused: ${r.type}`);
    }
  }

  sendRequest(type: number, handle: number, offset: number | bigint, length: number, flags = 0, payload?: Buffer): void {
    this.send(u32(REQUEST_MAGIC), u16(flags), u16(type), u64(BigInt(handle)), u64(BigInt(offset)), u32(length), payload ?? Buffer.alloc(0));
  }

  /** Reads one simple reply (16 bytes) and returns errno and handle. */
  async simpleReply(): Promise<{ magic: number; errno: number; handle: number }> {
    const h = await this.reader.read(16);
    return { magic: h.readUInt32BE(0), errno: h.readUInt32BE(4), handle: Number(h.readBigUInt64BE(8)) };
  }

  /** Waits for the peer to close; resolves false if it stays open for timeoutMs. */
  async waitClosed(timeoutMs = 3000): Promise<boolean> {
    const timer = new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs).unref());
    return Promise.race([this.closed.then(() => true), timer]);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export const u16 = (v: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; };
export const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b; };
export const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(v); return b; };
