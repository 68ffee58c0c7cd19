/**
 * The lease option: a generic extension of NBD's handshake by which a server
 * grants one read-write owner per export (docs/nbd.md, "Leases"). A client names
 * an export and an opaque token; the server keeps, per export, the holder token
 * and an epoch that grows with every change. Encoding, all big endian:
 *
 *   request  op u16 | epoch u64 | name u32+bytes | token u16+bytes | to u16+bytes
 *   reply    NBD_REP_LEASE: granted u8 | epoch u64 | holder u16+bytes, then NBD_REP_ACK
 *
 * A refusal is a reply like any other (granted 0, with who holds the lease), so
 * a client learns the holder in one round trip; NBD_REP_ERR_* only for malformed
 * requests and servers that do not offer leases (NBD_REP_ERR_UNSUP).
 */
import { NbdError } from './errors.ts';
import { MAX_STRING } from './constants.ts';

/** Option and reply numbers: ASCII "LEAS", far from the spec's small numbers (docs/nbd.md). */
export const OPT_LEASE = 0x4c454153;
export const REP_LEASE = 0x4c454153;

export const LEASE_OP = {
  /** Take a free lease, or renew one this token holds (the epoch grows either way); binds the connection to the token. */
  ACQUIRE: 1,
  /** Atomically move the lease from `token` at `epoch` to `to` (to may equal token: a renewal); binds to `to`. */
  HANDOVER: 2,
  /** Free a lease this token holds. */
  RELEASE: 3,
  /** Who holds the lease, at which epoch. */
  QUERY: 4,
} as const;
export type LeaseOp = (typeof LEASE_OP)[keyof typeof LEASE_OP];

/** Tokens are opaque and short: a UUID fits with room to spare. */
export const MAX_LEASE_TOKEN = 128;

export interface LeaseRequest {
  op: LeaseOp;
  exportName: string;
  token: string;
  epoch: number;
  to: string;
}

export interface LeaseState {
  granted: boolean;
  /** Null when nobody holds the lease. */
  holder: string | null;
  epoch: number;
}

const str16 = (s: string) => {
  const b = Buffer.from(s);
  const out = Buffer.alloc(2 + b.length);
  out.writeUInt16BE(b.length, 0);
  b.copy(out, 2);
  return out;
};

export function encodeLeaseRequest(r: LeaseRequest): Buffer {
  const name = Buffer.from(r.exportName);
  const head = Buffer.alloc(14);
  head.writeUInt16BE(r.op, 0);
  head.writeBigUInt64BE(BigInt(r.epoch), 2);
  head.writeUInt32BE(name.length, 10);
  return Buffer.concat([head, name, str16(r.token), str16(r.to)]);
}

/** Null for anything malformed: unknown op, lengths that overrun, tokens too long. */
export function decodeLeaseRequest(b: Buffer): LeaseRequest | null {
  if (b.length < 14) return null;
  const op = b.readUInt16BE(0);
  if (!Object.values(LEASE_OP).includes(op as LeaseOp)) return null;
  const epoch = b.readBigUInt64BE(2);
  const nameLength = b.readUInt32BE(10);
  if (nameLength > MAX_STRING || epoch > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  let at = 14 + nameLength;
  const tokens: string[] = [];
  for (let i = 0; i < 2; i++) {
    if (at + 2 > b.length) return null;
    const n = b.readUInt16BE(at);
    if (n > MAX_LEASE_TOKEN || at + 2 + n > b.length) return null;
    tokens.push(b.toString('utf8', at + 2, at + 2 + n));
    at += 2 + n;
  }
  if (at !== b.length || 14 + nameLength > b.length) return null;
  return { op: op as LeaseOp, epoch: Number(epoch), exportName: b.toString('utf8', 14, 14 + nameLength), token: tokens[0], to: tokens[1] };
}

export function encodeLeaseState(s: LeaseState): Buffer {
  const head = Buffer.alloc(9);
  head.writeUInt8(s.granted ? 1 : 0, 0);
  head.writeBigUInt64BE(BigInt(s.epoch), 1);
  return Buffer.concat([head, str16(s.holder ?? '')]);
}

export function decodeLeaseState(b: Buffer): LeaseState {
  if (b.length < 11) throw new NbdError('NBD_PROTOCOL', `lease reply of ${b.length} bytes is too short`);
  const n = b.readUInt16BE(9);
  if (11 + n !== b.length || n > MAX_LEASE_TOKEN) throw new NbdError('NBD_PROTOCOL', 'malformed lease reply');
  const epoch = b.readBigUInt64BE(1);
  if (epoch > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdError('NBD_PROTOCOL', 'lease epoch beyond 2^53');
  const holder = b.toString('utf8', 11);
  return { granted: b.readUInt8(0) === 1, epoch: Number(epoch), holder: holder === '' ? null : holder };
}
