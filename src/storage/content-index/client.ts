/**
 * The lookup side of the content index, for the QEMU stream proxy: connects to an
 * NBD server's query socket (`livemig nbd serve --content-index-listen`), learns the
 * export's hash seed, hashes pages the way the server hashes blocks, and asks in
 * batches (pipelined, at most MAX_HASHES per request). A block it returns is a
 * candidate only: the reference must still carry a keyed hash the destination checks.
 */
import net from 'node:net';
import { parseListenAddress } from '../../../nbd/index.ts';
import { BlockHasher, BLOCK_SIZE } from './fast-hash.ts';
import { LivemigError } from '../../errors.ts';
import { LineSplitter, MAX_HASHES, PROTOCOL, type Hello, type HelloExport } from './query-protocol.ts';
import type { ContentIndexStats } from './content-index.ts';

interface Reply {
  id: number | null;
  ok: boolean;
  code?: string;
  error?: string;
  [k: string]: unknown;
}

export class ContentIndexClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private closedWith: LivemigError | null = null;
  /** Hashes pages with this export's seed; equal bytes give the server's hash. */
  hasher!: BlockHasher;
  info!: HelloExport;

  private constructor(private readonly socket: net.Socket, readonly exportName: string) {
    const lines = new LineSplitter((line) => this.onReply(line));
    socket.on('data', (chunk: Buffer) => {
      try {
        lines.push(chunk);
      } catch (err) {
        this.fail(new LivemigError('CINDEX_PROTOCOL', `query server sent ${(err as Error).message}`));
      }
    });
    socket.on('close', () => this.fail(new LivemigError('CINDEX_CLOSED', 'content index connection closed')));
    socket.on('error', (err) => this.fail(new LivemigError('CINDEX_CLOSED', `content index connection error: ${err.message}`, { cause: err })));
  }

  /** Connects to `tcp://HOST:PORT` or `unix:PATH` and selects an export. */
  static async connect(address: string, exportName = '', opts: { timeoutMs?: number } = {}): Promise<ContentIndexClient> {
    let a;
    try {
      a = parseListenAddress(address);
    } catch (err) {
      throw new LivemigError('CINDEX_CONFIG', (err as Error).message);
    }
    const socket = a.transport === 'unix' ? net.connect(a.path) : net.connect(a.port, a.host);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => (socket.destroy(), reject(new LivemigError('CINDEX_CONNECT_FAILED', `${address}: timed out connecting`))), opts.timeoutMs ?? 10_000);
      socket.once('connect', () => (clearTimeout(timer), resolve()));
      socket.once('error', (err) => (clearTimeout(timer), reject(new LivemigError('CINDEX_CONNECT_FAILED', `${address}: ${err.message}`, { cause: err }))));
    });
    socket.setNoDelay(true);
    const client = new ContentIndexClient(socket, exportName);
    try {
      const hello = (await client.request({ op: 'hello' })) as unknown as Hello;
      if (hello.protocol !== PROTOCOL || hello.blockSize !== BLOCK_SIZE) {
        throw new LivemigError('CINDEX_PROTOCOL', `${address} speaks content index protocol ${hello.protocol} with ${hello.blockSize}-byte blocks; this client speaks ${PROTOCOL} with ${BLOCK_SIZE}`);
      }
      const info = hello.exports.find((e) => e.name === exportName);
      if (!info) throw new LivemigError('CINDEX_NO_EXPORT', `${address} has no content index for export ${JSON.stringify(exportName)} (have: ${hello.exports.map((e) => JSON.stringify(e.name)).join(', ') || 'none'})`);
      client.info = info;
      client.hasher = new BlockHasher(info.seed);
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** Hashes n whole pages (n * 4096 bytes) into [hi, lo] pairs. */
  hashPages(pages: Uint8Array): Uint32Array {
    const n = Math.floor(pages.length / BLOCK_SIZE);
    const out = new Uint32Array(2 * n);
    for (let i = 0; i < n; i++) {
      this.hasher.hash(pages.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE));
      out[2 * i] = this.hasher.hi;
      out[2 * i + 1] = this.hasher.lo;
    }
    return out;
  }

  /** For each [hi, lo] pair, the block last seen holding that content, or -1. */
  async lookup(hashes: Uint32Array): Promise<Float64Array> {
    const n = hashes.length >>> 1;
    const out = new Float64Array(n);
    const batches: Promise<void>[] = [];
    for (let from = 0; from < n; from += MAX_HASHES) {
      const to = Math.min(n, from + MAX_HASHES);
      const hex = Buffer.allocUnsafe((to - from) * 8);
      for (let i = from; i < to; i++) {
        hex.writeUInt32BE(hashes[2 * i], 8 * (i - from));
        hex.writeUInt32BE(hashes[2 * i + 1], 8 * (i - from) + 4);
      }
      batches.push(
        this.request({ op: 'lookup', export: this.exportName, hashes: hex.toString('hex') }).then((r) => {
          const blocks = r.blocks as number[];
          if (!Array.isArray(blocks) || blocks.length !== to - from) throw new LivemigError('CINDEX_PROTOCOL', 'lookup reply has the wrong number of blocks');
          out.set(blocks, from);
        }),
      );
    }
    await Promise.all(batches);
    return out;
  }

  /** Hashes the pages and looks them up: per page, a candidate block or -1. */
  lookupPages(pages: Uint8Array): Promise<Float64Array> {
    return this.lookup(this.hashPages(pages));
  }

  async stats(): Promise<ContentIndexStats> {
    return (await this.request({ op: 'stats', export: this.exportName })).stats as ContentIndexStats;
  }

  close(): void {
    this.socket.end();
    this.socket.destroySoon();
  }

  private request(body: object): Promise<Reply> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(JSON.stringify({ id, ...body }) + '\n');
    }).then((r) => {
      if (!r.ok) throw new LivemigError((r.code as LivemigError['code']) ?? 'CINDEX_PROTOCOL', r.error ?? 'request failed');
      return r;
    });
  }

  private onReply(line: string): void {
    let r: Reply;
    try {
      r = JSON.parse(line) as Reply;
    } catch {
      return this.fail(new LivemigError('CINDEX_PROTOCOL', 'query server sent a line that is not JSON'));
    }
    const p = typeof r.id === 'number' ? this.pending.get(r.id) : undefined;
    if (!p) return this.fail(new LivemigError('CINDEX_PROTOCOL', r.error ? `query server: ${r.error}` : 'reply to no request'));
    this.pending.delete(r.id as number);
    p.resolve(r);
  }

  private fail(err: LivemigError): void {
    this.closedWith ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.socket.destroy();
  }
}
