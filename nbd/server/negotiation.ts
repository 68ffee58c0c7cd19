/**
 * The server side of fixed newstyle negotiation (doc/proto.md, "Handshake"),
 * with TLS as the spec's "TLS support" section describes it:
 *   off      NBD_OPT_STARTTLS is refused (NBD_REP_ERR_POLICY), as in NOTLS mode;
 *   on       a client may upgrade, or not (every export is served either way);
 *   require  FORCEDTLS: until the upgrade every option but STARTTLS and ABORT
 *            gets NBD_REP_ERR_TLS_REQD (EXPORT_NAME, which cannot be refused,
 *            ends the session), so no export is named or described in clear.
 * Returns the chosen export and the socket to go on with (the TLS socket after
 * an upgrade), or null when the session ended during haggling.
 */
import type { Socket } from 'node:net';
import {
  NBDMAGIC, IHAVEOPT, OPTION_REPLY_MAGIC, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES,
  FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, OPT, REP, INFO, TF, MAX_OPTION_LENGTH, MAX_STRING,
} from '../constants.ts';
import { SocketReader } from '../socket-reader.ts';
import { startServerTls, type TlsCredentials } from '../tls.ts';
import type { ExportSpec } from './export.ts';
import type { Logger } from '../logger.ts';
import { OPT_LEASE, REP_LEASE, LEASE_OP, decodeLeaseRequest, encodeLeaseState } from '../lease.ts';
import type { Leases } from './leases.ts';

export interface Negotiated {
  export: ExportSpec;
  structuredReplies: boolean;
  transmissionFlags: number;
  /** The lease token this connection acquired or was handed for its export (nbd/lease.ts), if any. */
  leaseToken: string | null;
}

export type TlsMode = 'off' | 'on' | 'require';

export interface NegotiationContext {
  lookup: (name: string) => ExportSpec | undefined;
  list: () => ExportSpec[];
  maxRequest: number;
  tls: { mode: TlsMode; credentials: TlsCredentials | null };
  /** High-water mark of the reader made for the TLS socket after an upgrade. */
  readerHighWater: number;
  /** Null: this server does not offer leases (NBD_REP_ERR_UNSUP). */
  leases: Leases | null;
  log: Logger;
  peer: string;
}

export interface Session extends Negotiated {
  socket: Socket;
  reader: SocketReader;
}

export function transmissionFlags(spec: ExportSpec): number {
  const base = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.CAN_MULTI_CONN;
  if (spec.backend.readOnly) return base | TF.READ_ONLY;
  return base | TF.SEND_FUA | TF.SEND_TRIM | TF.SEND_WRITE_ZEROES;
}

const u16 = (v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v, 0);
  return b;
};

/** What an option handler decided: haggle on, enter transmission, or end the session. */
type Outcome = 'continue' | 'end' | Negotiated;

export function negotiate(socket: Socket, reader: SocketReader, ctx: NegotiationContext): Promise<Session | null> {
  return new ServerNegotiation(socket, reader, ctx).run();
}

class ServerNegotiation {
  private noZeroes = false;
  private structuredReplies = false;
  private secure = false;
  /** Set by a granted lease request: the export and the token this connection writes as. */
  private bound: { exportName: string; token: string } | null = null;

  constructor(private socket: Socket, private reader: SocketReader, private readonly ctx: NegotiationContext) {}

  async run(): Promise<Session | null> {
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(NBDMAGIC, 0);
    greeting.writeBigUInt64BE(IHAVEOPT, 8);
    greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    this.socket.write(greeting);
    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
      this.ctx.log.warn({ clientFlags }, 'client sent unknown handshake flags; closing');
      return null; // the spec says the server MUST drop the connection
    }
    this.noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;
    for (;;) {
      const outcome = await this.nextOption();
      if (outcome === 'end') return null;
      if (outcome !== 'continue') return { ...outcome, socket: this.socket, reader: this.reader };
    }
  }

  private reply(opt: number, type: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data.length, 16);
    this.socket.write(data.length ? Buffer.concat([h, data]) : h);
  }

  private refuse(opt: number, type: number, message: string): 'continue' {
    this.reply(opt, type, Buffer.from(message));
    return 'continue';
  }

  private async nextOption(): Promise<Outcome> {
    const header = await this.reader.read(16);
    if (header.readBigUInt64BE(0) !== IHAVEOPT) {
      this.ctx.log.warn({}, 'bad option magic; closing');
      return 'end';
    }
    const opt = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > MAX_OPTION_LENGTH) {
      if (opt === OPT.EXPORT_NAME) return 'end'; // cannot be answered with an error
      await this.reader.skip(length);
      return this.refuse(opt, REP.ERR_TOO_BIG, `option data of ${length} bytes is too large`);
    }
    const data = await this.reader.read(length);
    this.ctx.log.debug({ opt, length }, 'option');
    if (this.ctx.tls.mode === 'require' && !this.secure && opt !== OPT.STARTTLS && opt !== OPT.ABORT) {
      if (opt === OPT.EXPORT_NAME) return 'end';
      return this.refuse(opt, REP.ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
    }
    return this.handle(opt, data);
  }

  private async handle(opt: number, data: Buffer): Promise<Outcome> {
    switch (opt) {
      case OPT.EXPORT_NAME:
        return this.exportName(data);
      case OPT.ABORT:
        this.reply(opt, REP.ACK);
        return 'end';
      case OPT.LIST:
        return this.listExports(data);
      case OPT.STRUCTURED_REPLY:
        if (data.length !== 0) return this.refuse(opt, REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        this.structuredReplies = true;
        this.reply(opt, REP.ACK);
        return 'continue';
      case OPT.INFO:
      case OPT.GO:
        return this.infoOrGo(opt, data);
      case OPT.STARTTLS:
        return this.startTls(data);
      case OPT_LEASE:
        return this.lease(data);
      default:
        // Includes meta contexts and extended headers, which this server does not implement.
        return this.refuse(opt, REP.ERR_UNSUP, `option ${opt} is not supported`);
    }
  }

  private exportName(data: Buffer): Outcome {
    const spec = this.ctx.lookup(data.toString('utf8'));
    if (!spec) return 'end'; // the spec: MUST terminate the session
    const tflags = transmissionFlags(spec);
    const out = Buffer.alloc(this.noZeroes ? 10 : 134);
    out.writeBigUInt64BE(BigInt(spec.backend.size), 0);
    out.writeUInt16BE(tflags, 8);
    this.socket.write(out);
    return this.negotiated(spec, tflags);
  }

  private negotiated(spec: ExportSpec, tflags: number): Negotiated {
    const leaseToken = this.bound?.exportName === spec.name ? this.bound.token : null;
    return { export: spec, structuredReplies: this.structuredReplies, transmissionFlags: tflags, leaseToken };
  }

  /** The lease option (nbd/lease.ts): one atomic step on the export's lease, answered with its state. */
  private lease(data: Buffer): Outcome {
    if (!this.ctx.leases) return this.refuse(OPT_LEASE, REP.ERR_UNSUP, 'this server does not offer leases');
    const r = decodeLeaseRequest(data);
    if (!r) return this.refuse(OPT_LEASE, REP.ERR_INVALID, 'malformed lease request');
    if (!this.ctx.lookup(r.exportName)) return this.refuse(OPT_LEASE, REP.ERR_UNKNOWN, `no export named ${JSON.stringify(r.exportName)}`);
    const state = this.ctx.leases.apply(r);
    if (state.granted && (r.op === LEASE_OP.ACQUIRE || r.op === LEASE_OP.HANDOVER)) {
      this.bound = { exportName: r.exportName, token: r.op === LEASE_OP.HANDOVER ? r.to : r.token };
    }
    this.ctx.log.info({ peer: this.ctx.peer, op: r.op, export: r.exportName, granted: state.granted, epoch: state.epoch }, 'lease');
    this.reply(OPT_LEASE, REP_LEASE, encodeLeaseState(state));
    this.reply(OPT_LEASE, REP.ACK);
    return 'continue';
  }

  private listExports(data: Buffer): Outcome {
    if (data.length !== 0) return this.refuse(OPT.LIST, REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
    for (const spec of this.ctx.list()) {
      const name = Buffer.from(spec.name);
      const d = Buffer.alloc(4 + name.length);
      d.writeUInt32BE(name.length, 0);
      name.copy(d, 4);
      this.reply(OPT.LIST, REP.SERVER, Buffer.concat([d, Buffer.from(spec.backend.description)]));
    }
    this.reply(OPT.LIST, REP.ACK);
    return 'continue';
  }

  private infoOrGo(opt: number, data: Buffer): Outcome {
    const parsed = parseInfoRequest(data);
    if (!parsed) return this.refuse(opt, REP.ERR_INVALID, 'malformed NBD_OPT_INFO/GO data');
    const spec = this.ctx.lookup(parsed.name);
    if (!spec) return this.refuse(opt, REP.ERR_UNKNOWN, `no export named ${JSON.stringify(parsed.name)}`);
    const tflags = transmissionFlags(spec);
    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(INFO.EXPORT, 0);
    exportInfo.writeBigUInt64BE(BigInt(spec.backend.size), 2);
    exportInfo.writeUInt16BE(tflags, 10);
    this.reply(opt, REP.INFO, exportInfo);
    // Block sizes are always sent, the same on GO and INFO: clients that did not ask may ignore them.
    const bs = Buffer.alloc(14);
    bs.writeUInt16BE(INFO.BLOCK_SIZE, 0);
    bs.writeUInt32BE(1, 2);
    bs.writeUInt32BE(4096, 6);
    bs.writeUInt32BE(this.ctx.maxRequest, 10);
    this.reply(opt, REP.INFO, bs);
    if (parsed.requests.includes(INFO.NAME)) this.reply(opt, REP.INFO, Buffer.concat([u16(INFO.NAME), Buffer.from(spec.name)]));
    if (parsed.requests.includes(INFO.DESCRIPTION)) {
      this.reply(opt, REP.INFO, Buffer.concat([u16(INFO.DESCRIPTION), Buffer.from(spec.backend.description)]));
    }
    this.reply(opt, REP.ACK);
    return opt === OPT.GO ? this.negotiated(spec, tflags) : 'continue';
  }

  /** Acknowledges NBD_OPT_STARTTLS and runs the handshake; what follows is read from the TLS socket. */
  private async startTls(data: Buffer): Promise<Outcome> {
    const { mode, credentials } = this.ctx.tls;
    if (mode === 'off' || !credentials) return this.refuse(OPT.STARTTLS, REP.ERR_POLICY, 'this server does not offer TLS');
    if (this.secure) return this.refuse(OPT.STARTTLS, REP.ERR_INVALID, 'TLS is already in use');
    if (data.length !== 0) return this.refuse(OPT.STARTTLS, REP.ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
    this.reply(OPT.STARTTLS, REP.ACK);
    // Bytes sent after STARTTLS but before our ACK would be plaintext injected into the TLS stream.
    if (this.reader.detach().some((b) => b.length > 0)) {
      this.ctx.log.warn({ peer: this.ctx.peer }, 'client sent data before the TLS handshake; closing');
      return 'end';
    }
    try {
      this.socket = await startServerTls(this.socket, credentials, this.ctx.peer);
    } catch (err) {
      this.ctx.log.warn({ peer: this.ctx.peer, err: (err as Error).message }, 'TLS handshake failed');
      return 'end';
    }
    this.reader = new SocketReader(this.socket, this.ctx.readerHighWater);
    this.secure = true;
    return 'continue';
  }
}

function parseInfoRequest(data: Buffer): { name: string; requests: number[] } | null {
  if (data.length < 6) return null;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > MAX_STRING || 4 + nameLength + 2 > data.length) return null;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + count * 2) return null;
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(4 + nameLength + 2 + i * 2));
  return { name, requests };
}
