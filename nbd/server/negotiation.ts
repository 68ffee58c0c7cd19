/**
 * The server side of fixed newstyle negotiation (doc/proto.md, "Handshake").
 * Returns the chosen export and whether structured replies were agreed, or null
 * when the session ended during haggling.
 */
import type { Socket } from 'node:net';
import {
  NBDMAGIC, IHAVEOPT, OPTION_REPLY_MAGIC, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES,
  FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, OPT, REP, INFO, TF, MAX_OPTION_LENGTH, MAX_STRING,
} from '../constants.ts';
import type { SocketReader } from '../socket-reader.ts';
import type { ExportSpec } from './export.ts';
import type { Logger } from '../logger.ts';

export interface Negotiated {
  export: ExportSpec;
  structuredReplies: boolean;
  transmissionFlags: number;
}

export interface NegotiationLimits {
  maxRequest: number;
}

export function transmissionFlags(spec: ExportSpec): number {
  const base = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.CAN_MULTI_CONN;
  if (spec.backend.readOnly) return base | TF.READ_ONLY;
  return base | TF.SEND_FUA | TF.SEND_TRIM | TF.SEND_WRITE_ZEROES;
}

export async function negotiate(
  socket: Socket,
  reader: SocketReader,
  lookup: (name: string) => ExportSpec | undefined,
  list: () => ExportSpec[],
  limits: NegotiationLimits,
  log: Logger,
): Promise<Negotiated | null> {
  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(NBDMAGIC, 0);
  greeting.writeBigUInt64BE(IHAVEOPT, 8);
  greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  socket.write(greeting);

  const clientFlags = (await reader.read(4)).readUInt32BE(0);
  if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
    log.warn({ clientFlags }, 'client sent unknown handshake flags; closing');
    return null; // the spec says the server MUST drop the connection
  }
  const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;
  let structuredReplies = false;

  const reply = (opt: number, type: number, data: Buffer = Buffer.alloc(0)) => {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data.length, 16);
    socket.write(data.length ? Buffer.concat([h, data]) : h);
  };
  const replyError = (opt: number, type: number, message: string) => reply(opt, type, Buffer.from(message));

  for (;;) {
    const header = await reader.read(16);
    if (header.readBigUInt64BE(0) !== IHAVEOPT) {
      log.warn({}, 'bad option magic; closing');
      return null;
    }
    const opt = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > MAX_OPTION_LENGTH) {
      if (opt === OPT.EXPORT_NAME) return null; // cannot be answered with an error
      await reader.skip(length);
      replyError(opt, REP.ERR_TOO_BIG, `option data of ${length} bytes is too large`);
      continue;
    }
    const data = await reader.read(length);
    log.debug({ opt, length }, 'option');

    switch (opt) {
      case OPT.EXPORT_NAME: {
        const spec = lookup(data.toString('utf8'));
        if (!spec) return null; // the spec: MUST terminate the session
        const tflags = transmissionFlags(spec);
        const out = Buffer.alloc(noZeroes ? 10 : 134);
        out.writeBigUInt64BE(BigInt(spec.backend.size), 0);
        out.writeUInt16BE(tflags, 8);
        socket.write(out);
        return { export: spec, structuredReplies, transmissionFlags: tflags };
      }
      case OPT.ABORT:
        reply(opt, REP.ACK);
        return null;
      case OPT.LIST: {
        if (length !== 0) {
          replyError(opt, REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
          break;
        }
        for (const spec of list()) {
          const name = Buffer.from(spec.name);
          const d = Buffer.alloc(4 + name.length);
          d.writeUInt32BE(name.length, 0);
          name.copy(d, 4);
          reply(opt, REP.SERVER, Buffer.concat([d, Buffer.from(spec.backend.description)]));
        }
        reply(opt, REP.ACK);
        break;
      }
      case OPT.STRUCTURED_REPLY:
        if (length !== 0) {
          replyError(opt, REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          break;
        }
        structuredReplies = true;
        reply(opt, REP.ACK);
        break;
      case OPT.INFO:
      case OPT.GO: {
        const parsed = parseInfoRequest(data);
        if (!parsed) {
          replyError(opt, REP.ERR_INVALID, 'malformed NBD_OPT_INFO/GO data');
          break;
        }
        const spec = lookup(parsed.name);
        if (!spec) {
          replyError(opt, REP.ERR_UNKNOWN, `no export named ${JSON.stringify(parsed.name)}`);
          break;
        }
        const tflags = transmissionFlags(spec);
        const exportInfo = Buffer.alloc(12);
        exportInfo.writeUInt16BE(INFO.EXPORT, 0);
        exportInfo.writeBigUInt64BE(BigInt(spec.backend.size), 2);
        exportInfo.writeUInt16BE(tflags, 10);
        reply(opt, REP.INFO, exportInfo);
        // Block sizes are always sent: clients that did not ask may ignore them.
        const bs = Buffer.alloc(14);
        bs.writeUInt16BE(INFO.BLOCK_SIZE, 0);
        bs.writeUInt32BE(1, 2);
        bs.writeUInt32BE(4096, 6);
        bs.writeUInt32BE(limits.maxRequest, 10);
        reply(opt, REP.INFO, bs);
        if (parsed.requests.includes(INFO.NAME)) {
          reply(opt, REP.INFO, Buffer.concat([u16(INFO.NAME), Buffer.from(spec.name)]));
        }
        if (parsed.requests.includes(INFO.DESCRIPTION)) {
          reply(opt, REP.INFO, Buffer.concat([u16(INFO.DESCRIPTION), Buffer.from(spec.backend.description)]));
        }
        reply(opt, REP.ACK);
        if (opt === OPT.GO) return { export: spec, structuredReplies, transmissionFlags: tflags };
        break;
      }
      case OPT.STARTTLS:
        replyError(opt, REP.ERR_POLICY, 'this server does not offer TLS');
        break;
      default:
        // Includes meta contexts and extended headers, which this server does not implement.
        replyError(opt, REP.ERR_UNSUP, `option ${opt} is not supported`);
    }
  }
}

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v, 0);
  return b;
}

/** INFO/GO data: u32 name length, name, u16 count, count × u16 info types. */
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
