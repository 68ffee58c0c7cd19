/**
 * The client side of fixed newstyle negotiation: structured replies when the
 * server offers them, NBD_OPT_GO with block sizes, and NBD_OPT_EXPORT_NAME for
 * servers too old for GO.
 */
import type { Socket } from 'node:net';
import {
  NBDMAGIC, IHAVEOPT, OPTION_REPLY_MAGIC, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES,
  FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, OPT, REP, INFO, DEFAULT_MAX_REQUEST, MAX_REQUEST, MAX_MINIMUM_BLOCK,
  MAX_OPTION_LENGTH, isErrorReply,
} from '../constants.ts';
import { NbdError } from '../errors.ts';
import { SocketReader } from '../socket-reader.ts';
import { startClientTls, type ClientTlsParams } from '../tls.ts';
import { OPT_LEASE, REP_LEASE, LEASE_OP, encodeLeaseRequest, decodeLeaseState, type LeaseRequest, type LeaseState } from '../lease.ts';

export interface ExportInfo {
  size: number;
  transmissionFlags: number;
  blockSize: { minimum: number; preferred: number; maximum: number };
  structuredReplies: boolean;
}

const REP_NAMES: Record<number, string> = {
  [REP.ERR_UNSUP]: 'unsupported',
  [REP.ERR_POLICY]: 'refused by policy',
  [REP.ERR_INVALID]: 'invalid',
  [REP.ERR_PLATFORM]: 'unsupported on this platform',
  [REP.ERR_TLS_REQD]: 'TLS required',
  [REP.ERR_UNKNOWN]: 'export not found',
  [REP.ERR_SHUTDOWN]: 'server shutting down',
  [REP.ERR_BLOCK_SIZE_REQD]: 'block size negotiation required',
  [REP.ERR_TOO_BIG]: 'request too big',
};

interface OptionReply {
  type: number;
  data: Buffer;
}

/** Options out, replies in; after STARTTLS both go over the TLS socket. */
class OptionChannel {
  constructor(public socket: Socket, public reader: SocketReader) {}

  send(opt: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    this.socket.write(data.length ? Buffer.concat([h, data]) : h);
  }

  async receive(opt: number): Promise<OptionReply> {
    const h = await this.reader.read(20);
    if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new NbdError('NBD_PROTOCOL', 'bad option reply magic from server');
    if (h.readUInt32BE(8) !== opt) throw new NbdError('NBD_PROTOCOL', `server replied to option ${h.readUInt32BE(8)}, expected ${opt}`);
    const length = h.readUInt32BE(16);
    // Names and descriptions are at most 4 KiB each: anything near this is a broken or hostile server.
    if (length > MAX_OPTION_LENGTH) throw new NbdError('NBD_PROTOCOL', `option reply of ${length} bytes is implausible`);
    const type = h.readUInt32BE(12);
    const data = await this.reader.read(length);
    if (type === REP.ERR_TLS_REQD) throw new NbdError('NBD_TLS', 'server requires TLS: connect with an nbds:// URI and credentials');
    return { type, data };
  }

  /** NBD_OPT_STARTTLS, then the handshake; a server that will not is an error, never a quiet plaintext session. */
  async startTls(params: ClientTlsParams, peer: string): Promise<void> {
    this.send(OPT.STARTTLS);
    const r = await this.receive(OPT.STARTTLS);
    if (r.type !== REP.ACK) throw new NbdError('NBD_TLS', `${peer} does not offer TLS (${REP_NAMES[r.type] ?? `reply ${r.type}`})`);
    if (this.reader.detach().some((b) => b.length > 0)) throw new NbdError('NBD_PROTOCOL', `${peer} sent data before the TLS handshake`);
    this.socket = await startClientTls(this.socket, params, peer);
    this.reader = new SocketReader(this.socket);
  }
}

function refusal(what: string, reply: OptionReply): NbdError {
  const msg = reply.data.length ? `: ${reply.data.toString('utf8')}` : '';
  const code = reply.type === REP.ERR_UNKNOWN ? 'NBD_NO_EXPORT' : 'NBD_HANDSHAKE';
  return new NbdError(code, `${what} ${REP_NAMES[reply.type] ?? `refused (${reply.type})`}${msg}`);
}

/** Reads the greeting, answers it, and upgrades to TLS when asked; returns the option channel. */
async function greet(socket: Socket, reader: SocketReader, tls: ClientTlsParams | undefined, peer: string): Promise<{ ch: OptionChannel; noZeroes: boolean }> {
  const g = await reader.read(18);
  if (g.readBigUInt64BE(0) !== NBDMAGIC) throw new NbdError('NBD_PROTOCOL', 'not an NBD server (bad greeting magic)');
  if (g.readBigUInt64BE(8) !== IHAVEOPT) throw new NbdError('NBD_HANDSHAKE', 'server uses oldstyle negotiation, which is not supported');
  const serverFlags = g.readUInt16BE(16);
  if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new NbdError('NBD_HANDSHAKE', 'server does not support fixed newstyle negotiation');
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES ? FLAG_C_NO_ZEROES : 0), 0);
  socket.write(flags);
  const ch = new OptionChannel(socket, reader);
  if (tls) await ch.startTls(tls, peer); // first, so that no option travels in clear
  return { ch, noZeroes: (serverFlags & FLAG_NO_ZEROES) !== 0 };
}

export interface ClientSession {
  info: ExportInfo;
  /** The lease acquired before GO, or null when none was asked or the server offers none. */
  lease: LeaseState | null;
  /** The socket to go on with: the TLS socket after an upgrade. */
  socket: Socket;
  reader: SocketReader;
}

/** One lease request (nbd/lease.ts); null when the server does not offer leases. */
async function leaseOption(ch: OptionChannel, req: LeaseRequest): Promise<LeaseState | null> {
  ch.send(OPT_LEASE, encodeLeaseRequest(req));
  const r = await ch.receive(OPT_LEASE);
  if (r.type === REP.ERR_UNSUP) return null;
  if (isErrorReply(r.type)) throw refusal('lease request', r);
  if (r.type !== REP_LEASE) throw new NbdError('NBD_PROTOCOL', `unexpected reply ${r.type} to the lease option`);
  const state = decodeLeaseState(r.data);
  const ack = await ch.receive(OPT_LEASE);
  if (ack.type !== REP.ACK) throw new NbdError('NBD_PROTOCOL', `unexpected reply ${ack.type} after the lease state`);
  return state;
}

export async function negotiateClient(socket: Socket, reader: SocketReader, exportName: string, tls?: ClientTlsParams, peer = 'server', leaseToken?: string): Promise<ClientSession> {
  const { ch, noZeroes } = await greet(socket, reader, tls, peer);
  let lease: LeaseState | null = null;
  if (leaseToken) {
    // Before GO: the connection writes as the token it acquired with.
    lease = await leaseOption(ch, { op: LEASE_OP.ACQUIRE, exportName, token: leaseToken, epoch: 0, to: '' });
    if (lease && !lease.granted) throw new NbdError('NBD_LEASE_HELD', `${peer}: the lease of export ${JSON.stringify(exportName)} is held by another client (epoch ${lease.epoch})`);
  }
  ch.send(OPT.STRUCTURED_REPLY);
  const sr = await ch.receive(OPT.STRUCTURED_REPLY);
  if (sr.type !== REP.ACK && !isErrorReply(sr.type)) throw new NbdError('NBD_PROTOCOL', `unexpected reply ${sr.type} to NBD_OPT_STRUCTURED_REPLY`);
  const structuredReplies = sr.type === REP.ACK;
  const name = Buffer.from(exportName);
  const went = await go(ch, name, exportName);
  if (went) return { info: { ...went, structuredReplies }, lease, socket: ch.socket, reader: ch.reader };

  ch.send(OPT.EXPORT_NAME, name);
  let tail: Buffer;
  try {
    tail = await ch.reader.read(noZeroes ? 10 : 134);
  } catch {
    // The spec's only way to refuse EXPORT_NAME is to close the connection.
    throw new NbdError('NBD_NO_EXPORT', `server closed the connection: export ${JSON.stringify(exportName)} not found`);
  }
  const blockSize = { minimum: 1, preferred: 4096, maximum: DEFAULT_MAX_REQUEST };
  const info = { ...parseExportInfo(tail.subarray(0, 10), 'NBD_OPT_EXPORT_NAME reply'), blockSize, structuredReplies };
  return { info, lease, socket: ch.socket, reader: ch.reader };
}

/** NBD_OPT_GO with a block size request; null when the server is too old for GO (fall back to EXPORT_NAME). */
async function go(ch: OptionChannel, name: Buffer, exportName: string): Promise<Omit<ExportInfo, 'structuredReplies'> | null> {
  const data = Buffer.alloc(4 + name.length + 2 + 2);
  data.writeUInt32BE(name.length, 0);
  name.copy(data, 4);
  data.writeUInt16BE(1, 4 + name.length);
  data.writeUInt16BE(INFO.BLOCK_SIZE, 6 + name.length);
  ch.send(OPT.GO, data);
  let exp: { size: number; transmissionFlags: number } | null = null;
  let blockSize = { minimum: 1, preferred: 4096, maximum: DEFAULT_MAX_REQUEST };
  for (;;) {
    const r = await ch.receive(OPT.GO);
    if (r.type === REP.INFO) {
      if (r.data.length < 2) throw new NbdError('NBD_PROTOCOL', 'short NBD_REP_INFO');
      const kind = r.data.readUInt16BE(0);
      if (kind === INFO.EXPORT) exp = parseExportInfo(r.data.subarray(2), 'NBD_INFO_EXPORT');
      else if (kind === INFO.BLOCK_SIZE) blockSize = parseBlockSize(r.data);
      continue;
    }
    if (r.type === REP.ACK) {
      if (!exp) throw new NbdError('NBD_PROTOCOL', 'server finished NBD_OPT_GO without NBD_INFO_EXPORT');
      return { ...exp, blockSize };
    }
    if (r.type === REP.ERR_UNSUP) return null;
    if (isErrorReply(r.type)) throw refusal(`export ${JSON.stringify(exportName)}:`, r);
    throw new NbdError('NBD_PROTOCOL', `unexpected reply ${r.type} to NBD_OPT_GO`);
  }
}

/** Size and transmission flags (10 bytes), as in NBD_INFO_EXPORT and the EXPORT_NAME reply. */
function parseExportInfo(b: Buffer, what: string): { size: number; transmissionFlags: number } {
  if (b.length !== 10) throw new NbdError('NBD_PROTOCOL', `${what} of ${b.length + 2} bytes (expected 12)`);
  const size = b.readBigUInt64BE(0);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdError('NBD_PROTOCOL', `export size ${size} is beyond 2^53`);
  return { size: Number(size), transmissionFlags: b.readUInt16BE(8) };
}

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

/**
 * NBD_INFO_BLOCK_SIZE, checked as doc/proto.md requires ("Size constraints"). The
 * maximum we use is capped at MAX_REQUEST and kept a multiple of the minimum, so a
 * server advertising 4 GiB still gets requests we can hold.
 */
function parseBlockSize(b: Buffer): ExportInfo['blockSize'] {
  if (b.length !== 14) throw new NbdError('NBD_PROTOCOL', `NBD_INFO_BLOCK_SIZE of ${b.length} bytes (expected 14)`);
  const minimum = b.readUInt32BE(2);
  const preferred = b.readUInt32BE(6);
  const advertised = b.readUInt32BE(10);
  if (!isPowerOfTwo(minimum) || minimum > MAX_MINIMUM_BLOCK || !isPowerOfTwo(preferred) || preferred < minimum || advertised < minimum) {
    throw new NbdError('NBD_PROTOCOL', `impossible block sizes from server: minimum ${minimum}, preferred ${preferred}, maximum ${advertised}`);
  }
  const capped = Math.min(advertised, MAX_REQUEST);
  return { minimum, preferred, maximum: capped - (capped % minimum) };
}

/** NBD_OPT_LIST: the server's export names and descriptions, then a soft disconnect. */
export async function listExports(socket: Socket, reader: SocketReader, tls?: ClientTlsParams, peer = 'server'): Promise<{ name: string; description: string }[]> {
  const { ch } = await greet(socket, reader, tls, peer);
  ch.send(OPT.LIST);
  const out: { name: string; description: string }[] = [];
  for (;;) {
    const r = await ch.receive(OPT.LIST);
    if (r.type === REP.ACK) break;
    if (isErrorReply(r.type)) throw refusal('listing exports:', r);
    if (r.type !== REP.SERVER || r.data.length < 4) throw new NbdError('NBD_PROTOCOL', `unexpected reply ${r.type} to NBD_OPT_LIST`);
    const n = r.data.readUInt32BE(0);
    if (n > r.data.length - 4) throw new NbdError('NBD_PROTOCOL', 'NBD_REP_SERVER name overruns its reply');
    out.push({ name: r.data.toString('utf8', 4, 4 + n), description: r.data.toString('utf8', 4 + n) });
  }
  ch.send(OPT.ABORT);
  ch.socket.end();
  return out;
}

/** A lease request on its own connection, then a soft disconnect; null when the server offers no leases. */
export async function requestLease(socket: Socket, reader: SocketReader, req: LeaseRequest, tls?: ClientTlsParams, peer = 'server'): Promise<LeaseState | null> {
  const { ch } = await greet(socket, reader, tls, peer);
  const state = await leaseOption(ch, req);
  ch.send(OPT.ABORT);
  ch.socket.end();
  return state;
}
