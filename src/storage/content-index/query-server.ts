/**
 * Answers content index lookups for the QEMU stream proxy over a socket (JSON
 * lines, see query-protocol.ts). A socket rather than the SQLite file: the proxy
 * runs beside QEMU while the NBD server may be on the storage host, and the file
 * lags the live index by up to a persist interval (250 ms), long enough to miss a
 * write's drop. No authentication: it reveals which contents the disks hold,
 * which is less than the NBD export itself serves, so give it the NBD port's trust
 * (a Unix socket, or a storage network).
 */
import net from 'node:net';
import { promises as fsp } from 'node:fs';
import type { ListenAddress } from '../../../nbd/index.ts';
import { BLOCK_SIZE, HASH_NAME } from './fast-hash.ts';
import type { ContentIndex } from './content-index.ts';
import { LivemigError } from '../../errors.ts';
import { LineSplitter, MAX_HASHES, PROTOCOL, type Hello } from './query-protocol.ts';

interface Request {
  id?: unknown;
  op?: unknown;
  export?: unknown;
  hashes?: unknown;
}

export class ContentIndexQueryServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private listenedOn: ListenAddress | null = null;

  /** Each export's index and its size in bytes (hello reports blocks). */
  constructor(private readonly indexes: Map<string, { index: ContentIndex; size: number }>) {
    this.server = net.createServer((socket) => this.handle(socket));
  }

  async listen(address: ListenAddress): Promise<ListenAddress> {
    if (address.transport === 'unix') await fsp.rm(address.path, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      const done = () => (this.server.off('error', reject), resolve());
      if (address.transport === 'unix') this.server.listen(address.path, done);
      else this.server.listen(address.port, address.host, done);
    });
    const bound = this.server.address();
    this.listenedOn = address.transport === 'tcp' && bound && typeof bound === 'object' ? { ...address, port: bound.port } : address;
    return this.listenedOn;
  }

  /** Where clients connect, as `tcp://HOST:PORT` or `unix:PATH`. */
  get address(): string {
    const a = this.listenedOn;
    if (!a) throw new LivemigError('CINDEX_CONFIG', 'query server is not listening');
    return a.transport === 'tcp' ? `tcp://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}` : `unix:${a.path}`;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
    if (this.listenedOn?.transport === 'unix') await fsp.rm(this.listenedOn.path, { force: true });
  }

  private handle(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {}); // a vanished client concerns only its own connection
    const lines = new LineSplitter((line) => {
      const ok = socket.write(this.answer(line) + '\n');
      if (!ok && !socket.isPaused()) {
        socket.pause(); // a client that does not read its replies stops being read
        socket.once('drain', () => socket.resume());
      }
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        lines.push(chunk);
      } catch (err) {
        socket.end(JSON.stringify({ id: null, ok: false, code: 'CINDEX_PROTOCOL', error: (err as Error).message }) + '\n');
        socket.destroySoon();
      }
    });
  }

  /** One request line to one reply line; never throws. */
  private answer(line: string): string {
    let req: Request;
    try {
      req = JSON.parse(line) as Request;
      if (typeof req !== 'object' || req === null) throw new Error('not an object');
    } catch {
      return JSON.stringify({ id: null, ok: false, code: 'CINDEX_BAD_REQUEST', error: 'request is not a JSON object' });
    }
    const id = typeof req.id === 'number' || typeof req.id === 'string' ? req.id : null;
    try {
      return JSON.stringify({ id, ok: true, ...this.execute(req) });
    } catch (err) {
      const e = err as LivemigError;
      return JSON.stringify({ id, ok: false, code: e.code ?? 'CINDEX_BAD_REQUEST', error: e.message });
    }
  }

  private execute(req: Request): object {
    switch (req.op) {
      case 'hello':
        return this.hello();
      case 'lookup':
        return { blocks: this.lookup(this.indexOf(req.export), req.hashes) };
      case 'stats':
        return { stats: this.indexOf(req.export).stats() };
      default:
        throw new LivemigError('CINDEX_BAD_REQUEST', `unknown op ${JSON.stringify(req.op)} (have: hello, lookup, stats)`);
    }
  }

  private hello(): Hello {
    const exports = [...this.indexes].map(([name, { index, size }]) => ({
      name, seed: index.hasher.seedHex, blocks: Math.floor(size / BLOCK_SIZE), entries: index.table.size, capacity: index.table.capacity,
    }));
    return { protocol: PROTOCOL, hash: HASH_NAME, blockSize: BLOCK_SIZE, exports };
  }

  private indexOf(name: unknown): ContentIndex {
    const e = typeof name === 'string' ? this.indexes.get(name) : undefined;
    if (!e) throw new LivemigError('CINDEX_NO_EXPORT', `no content index for export ${JSON.stringify(name)}`);
    return e.index;
  }

  private lookup(index: ContentIndex, hashes: unknown): number[] {
    if (typeof hashes !== 'string' || hashes.length % 16 !== 0 || hashes.length > MAX_HASHES * 16) {
      throw new LivemigError('CINDEX_BAD_REQUEST', `hashes must be a string of 16 hex digits per hash, at most ${MAX_HASHES} hashes`);
    }
    const bytes = Buffer.from(hashes, 'hex');
    if (bytes.length * 2 !== hashes.length) throw new LivemigError('CINDEX_BAD_REQUEST', 'hashes holds a character that is not a hex digit');
    const out = new Array<number>(bytes.length / 8);
    for (let i = 0; i < out.length; i++) out[i] = index.lookup(bytes.readUInt32BE(8 * i), bytes.readUInt32BE(8 * i + 4));
    return out;
  }
}
