/**
 * An NBD server: fixed newstyle negotiation, several named exports, TCP and Unix
 * sockets, many clients at once. One bad client never takes down the others.
 */
import net from 'node:net';
import { promises as fsp } from 'node:fs';
import { MAX_REQUEST } from '../constants.ts';
import { NbdError } from '../errors.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { SocketReader } from '../socket-reader.ts';
import { formatNbdUri, type NbdAddress } from '../uri.ts';
import type { ExportSpec } from './export.ts';
import type { ListenAddress } from './listen-address.ts';
import { negotiate, type TlsMode } from './negotiation.ts';
import type { TlsCredentials } from '../tls.ts';
import { BufferPool } from '../buffer-pool.ts';
import { serveTransmission } from './transmission.ts';
import { ByteBudget } from './byte-budget.ts';
import { InlineIo, type InlineIoOptions } from './inline-io.ts';
import { Leases } from './leases.ts';

export interface NbdServerOptions {
  /** Largest READ/WRITE accepted, advertised in NBD_INFO_BLOCK_SIZE (default 64 MiB, as nbdkit). */
  maxRequest?: number;
  /** Requests one connection may have in progress at once (default 64). */
  maxInflight?: number;
  /** Read/write bytes one connection may have in progress at once (default 16 MiB). */
  maxInflightBytes?: number;
  /** Read/write bytes all connections together may hold at once (default 256 MiB). */
  maxBufferedBytes?: number;
  /** Small I/O on backends with synchronous calls runs on the event loop while quick (inline-io.ts); false: never. */
  inline?: InlineIoOptions | false;
  /** NBD_OPT_STARTTLS: 'off' (default without credentials), 'on', or 'require' (default with credentials). */
  tls?: TlsMode;
  tlsCredentials?: TlsCredentials;
  /** A client must finish negotiating (TLS included) within this (default 30 s). */
  handshakeTimeoutMs?: number;
  /** Grant leases (nbd/lease.ts; default true). Off for processes that share exports: a lease lives in one process. */
  leases?: boolean;
  logger?: Logger;
}

/** Limits on --max-request: the preferred block size below, what a 32-bit length field allows above. */
export const MIN_MAX_REQUEST = 4096;
export const MAX_MAX_REQUEST = 1024 * 1024 * 1024;
/** Bytes of unread requests queued per connection before the socket is paused. */
const READ_HIGH_WATER = 4 * 1024 * 1024;

export class NbdServer {
  private readonly exports = new Map<string, ExportSpec>();
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;
  private readonly log: Logger;
  private readonly maxRequest: number;
  private readonly maxInflight: number;
  private readonly maxInflightBytes: number;
  private closing = false;
  private readonly pool: BufferPool;
  private readonly budget: ByteBudget;
  /** One inline policy per export: exports may sit on storage of different speeds. */
  private readonly inline = new Map<ExportSpec, InlineIo>();
  private readonly activity = { inflight: 0 };
  private readonly tls: { mode: TlsMode; credentials: TlsCredentials | null };
  private readonly handshakeTimeoutMs: number;
  private listenedOn: ListenAddress | null = null;
  /** Null when leases are not offered. */
  readonly leases: Leases | null;
  private ownsSocketFile = false;
  /** Connections accepted since start (for status and tests). */
  connectionsAccepted = 0;

  constructor(exports: ExportSpec[], opts: NbdServerOptions = {}) {
    for (const e of exports) {
      if (this.exports.has(e.name)) throw new NbdError('NBD_EXPORT_CONFIG', `export ${JSON.stringify(e.name)} given twice`);
      this.exports.set(e.name, e);
      if (opts.inline !== false) this.inline.set(e, new InlineIo(opts.inline));
    }
    this.log = opts.logger ?? silentLogger;
    this.maxRequest = opts.maxRequest ?? MAX_REQUEST;
    if (!Number.isInteger(this.maxRequest) || this.maxRequest < MIN_MAX_REQUEST || this.maxRequest > MAX_MAX_REQUEST) {
      throw new NbdError('NBD_EXPORT_CONFIG', `maximum request ${opts.maxRequest} out of range (${MIN_MAX_REQUEST} to ${MAX_MAX_REQUEST} bytes)`);
    }
    const mode = opts.tls ?? (opts.tlsCredentials ? 'require' : 'off');
    if (mode !== 'off' && !opts.tlsCredentials) throw new NbdError('NBD_TLS_CONFIG', `TLS mode ${mode} needs credentials (x509 or PSK)`);
    this.tls = { mode, credentials: opts.tlsCredentials ?? null };
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 30_000;
    this.leases = opts.leases === false ? null : new Leases();
    this.maxInflight = opts.maxInflight ?? 64;
    this.maxInflightBytes = opts.maxInflightBytes ?? 16 * 1024 * 1024;
    this.budget = new ByteBudget(opts.maxBufferedBytes ?? 256 * 1024 * 1024);
    // Small buffers too: a fresh ArrayBuffer per 4 KiB request showed in profiles of small-request load.
    this.pool = new BufferPool(256, 64 * 1024 * 1024, 4096);
    this.server = net.createServer((socket) => void this.handle(socket));
  }

  /**
   * `replaceSocket: false` leaves an existing Unix socket file alone: for processes
   * that share one listening socket (cluster workers), whose primary made it.
   */
  async listen(address: ListenAddress, opts: { replaceSocket?: boolean } = {}): Promise<ListenAddress> {
    this.ownsSocketFile = address.transport === 'unix' && opts.replaceSocket !== false;
    if (this.ownsSocketFile && address.transport === 'unix') await fsp.rm(address.path, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      const done = () => {
        this.server.off('error', reject);
        resolve();
      };
      if (address.transport === 'unix') this.server.listen(address.path, done);
      else this.server.listen(address.port, address.host, done);
    });
    const bound = this.server.address();
    this.listenedOn =
      address.transport === 'tcp' && bound && typeof bound === 'object'
        ? { transport: 'tcp', host: address.host, port: bound.port }
        : address;
    this.log.info({ address: this.listenedOn }, 'listening');
    return this.listenedOn;
  }

  /** The NBD URI of an export on this server (after listen): nbds:// when TLS is required, credentials left for the client to add. */
  uri(exportName = ''): string {
    const a = this.listenedOn;
    if (!a) throw new NbdError('NBD_INVALID_ARGUMENT', 'server is not listening');
    const addr: NbdAddress =
      a.transport === 'tcp' ? { transport: 'tcp', host: a.host, port: a.port, exportName } : { transport: 'unix', socket: a.path, exportName };
    return formatNbdUri(this.tls.mode === 'require' ? { ...addr, tls: {} } : addr);
  }

  get connections(): number {
    return this.sockets.size;
  }

  /** The inline I/O policy of an export (for tests and status). */
  inlineIo(exportName: string): InlineIo | undefined {
    const spec = this.exports.get(exportName);
    return spec && this.inline.get(spec);
  }

  /** Request data held now, and the most held at once since start (bounded by maxBufferedBytes). */
  get bufferedBytes(): { now: number; peak: number } {
    return { now: this.budget.inUse, peak: this.budget.peak };
  }

  /** Stops accepting, lets requests in progress finish briefly, then drops every client. */
  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.end();
    const deadline = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, 2000);
    await closed;
    clearTimeout(deadline);
    if (this.ownsSocketFile && this.listenedOn?.transport === 'unix') await fsp.rm(this.listenedOn.path, { force: true });
  }

  private async handle(socket: net.Socket): Promise<void> {
    if (this.closing) return void socket.destroy();
    this.connectionsAccepted++;
    this.sockets.add(socket);
    socket.setNoDelay(true);
    const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    const log = this.log;
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', (err) => log.debug({ peer, err: err.message }, 'socket error'));
    const reader = new SocketReader(socket, READ_HIGH_WATER);
    let current: net.Socket = socket;
    // A client that never finishes negotiating (or its TLS handshake) is not kept forever.
    const stalled = setTimeout(() => {
      log.info({ peer }, 'negotiation timed out; closing');
      socket.destroy();
    }, this.handshakeTimeoutMs);
    try {
      const session = await negotiate(socket, reader, {
        lookup: (name) => this.exports.get(name),
        list: () => [...this.exports.values()],
        maxRequest: this.maxRequest,
        tls: this.tls,
        readerHighWater: READ_HIGH_WATER,
        leases: this.leases,
        log,
        peer,
      });
      clearTimeout(stalled);
      if (!session) return;
      current = session.socket;
      log.info({ peer, export: session.export.name, structured: session.structuredReplies, tls: session.socket !== socket }, 'client connected');
      const limits = { maxRequest: this.maxRequest, maxInflight: this.maxInflight, maxInflightBytes: this.maxInflightBytes, budget: this.budget };
      const inline = this.inline.get(session.export) ?? null;
      const ctx = { session, limits, log, shuttingDown: () => this.closing, pool: this.pool, inline, activity: this.activity, leases: this.leases };
      await serveTransmission(session.socket, session.reader.detach(), ctx);
    } catch (err) {
      // A client that vanishes mid-request lands here; only this connection is affected.
      log.debug({ peer, err: (err as Error).message }, 'connection ended');
    } finally {
      clearTimeout(stalled);
      // Let queued replies flush (and TLS say goodbye), but never keep a half-closed peer around forever.
      current.end();
      setTimeout(() => socket.destroy(), 5000).unref();
    }
  }
}
