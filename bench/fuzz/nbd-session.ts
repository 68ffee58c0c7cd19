/**
 * Hostile NBD sessions, as a client on the network could send them: fixed
 * newstyle haggling (LIST, INFO, STRUCTURED_REPLY, meta contexts, STARTTLS,
 * unknown options, GO or EXPORT_NAME), then many pipelined transmission requests
 * of every command with offsets, lengths and flags in and out of range, which
 * the server must answer (with an error where due) and go on. Each session ends
 * with one blow (a bad magic, a write whose payload never comes, a cut header,
 * garbage), a DISC, or just a close. Some sessions mutate the handshake itself;
 * some are random bytes. A session is a pure function of (seed, index).
 */
import { Rng } from '../../src/util/rng.ts';
import { IHAVEOPT, OPT, CMD, CMD_FLAG, REQUEST_MAGIC, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, INFO } from '../../nbd/constants.ts';
import { chance, mutateBytes, pick, randomBytes, INTERESTING_U32 } from './mutate.ts';
import type { FuzzSession } from './migration-session.ts';

export interface NbdFuzzContext {
  /** Exports the server has, with their sizes (the first is the one most sessions use). */
  exports: { name: string; size: number }[];
  /** The server's --max-request. */
  maxRequest: number;
  /** Longest run of requests before the session's last blow (the average is about half). */
  maxRequests: number;
}

/** What the reply parser needs to follow the session (reply-counter.ts). */
export interface NbdPlan {
  /** Options in the order sent; -1 where the handshake was mutated (the parser stops following). */
  options: number[];
  /** Lengths of the READs, by handle, so a simple reply's data can be skipped. */
  reads: Map<number, number>;
  /** Requests that get a reply (every request but DISC). */
  answered: number;
}

export interface NbdSession extends FuzzSession {
  requests: number;
  plan: NbdPlan;
}

const u16 = (v: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(v & 0xffff); return b; };
const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b; };
const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(v & 0xffffffffffffffffn); return b; };

function option(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([u64(IHAVEOPT), u32(opt), u32(data.length), data]);
}

function infoData(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name);
  return Buffer.concat([u32(n.length), n, u16(infos.length), ...infos.map(u16)]);
}

function request(type: number, flags: number, handle: number, offset: bigint, length: number, payload?: Buffer): Buffer {
  return Buffer.concat([u32(REQUEST_MAGIC), u16(flags), u16(type), u64(BigInt(handle)), u64(offset), u32(length), payload ?? Buffer.alloc(0)]);
}

/** Options before GO, each answered and the haggling goes on. */
function haggle(rng: Rng, ctx: NbdFuzzContext, out: Buffer[], opts: number[]): void {
  for (let i = rng.int(4); i > 0; i--) {
    const k = rng.int(8);
    const name = pick(rng, [...ctx.exports.map((e) => e.name), 'nope', 'x'.repeat(5000)]);
    const [opt, data] =
      k === 0 ? [OPT.LIST, Buffer.alloc(0)]
      : k === 1 ? [OPT.INFO, infoData(name, [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE, 77])]
      : k === 2 ? [OPT.SET_META_CONTEXT, Buffer.concat([infoData(name).subarray(0, -2), u32(1), u32(15), Buffer.from('base:allocation')])]
      : k === 3 ? [OPT.LIST_META_CONTEXT, Buffer.concat([infoData(name).subarray(0, -2), u32(0)])]
      : k === 4 ? [OPT.STARTTLS, Buffer.alloc(0)]
      : k === 5 ? [OPT.EXTENDED_HEADERS, Buffer.alloc(0)]
      : k === 6 ? [OPT.INFO, randomBytes(rng, rng.int(40))] // malformed: ERR_INVALID
      : [12 + rng.int(1000), randomBytes(rng, rng.int(100))];
    out.push(option(opt, data));
    opts.push(opt);
  }
}

/** The client flags, the options and the way into transmission. Returns false if the handshake was mutated. */
function handshake(rng: Rng, ctx: NbdFuzzContext, out: Buffer[], plan: NbdPlan, exportName: string): boolean {
  const parts: Buffer[] = [u32(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)];
  const opts: number[] = [];
  haggle(rng, ctx, parts, opts);
  if (chance(rng, 0.5)) {
    parts.push(option(OPT.STRUCTURED_REPLY));
    opts.push(OPT.STRUCTURED_REPLY);
  }
  const go = chance(rng, 0.85);
  parts.push(go ? option(OPT.GO, infoData(exportName, chance(rng, 0.3) ? [INFO.BLOCK_SIZE] : [])) : option(OPT.EXPORT_NAME, Buffer.from(exportName)));
  opts.push(go ? OPT.GO : OPT.EXPORT_NAME);
  if (chance(rng, 0.12)) {
    // One mutation somewhere in the haggling: flags, an option's magic, length or data.
    const i = rng.int(parts.length);
    parts[i] = mutateBytes(rng, parts[i], parts[(i + 1) % parts.length]);
    out.push(...parts);
    plan.options = [-1];
    return false;
  }
  out.push(...parts);
  plan.options = opts;
  return true;
}

interface Target {
  size: number;
}

/** One request the server must answer and then go on: the stream stays in step. */
function benign(rng: Rng, ctx: NbdFuzzContext, t: Target, handle: number, plan: NbdPlan): Buffer {
  const k = rng.int(100);
  const inRange = () => BigInt(rng.int(Math.max(1, t.size - 8192)));
  const offset = chance(rng, 0.9) ? inRange() : BigInt(pick(rng, [t.size, t.size - 1, t.size + 4096, 2 ** 32, 2 ** 53, 2 ** 63])) + BigInt(rng.int(2));
  const len = chance(rng, 0.9) ? rng.int(8193) : pick(rng, [0, 1, ctx.maxRequest, ctx.maxRequest + 1, 0xffffffff, 1 << 30]);
  const flags = chance(rng, 0.85) ? 0 : pick(rng, [CMD_FLAG.FUA, CMD_FLAG.NO_HOLE, CMD_FLAG.DF, CMD_FLAG.REQ_ONE, CMD_FLAG.FAST_ZERO, 1 << 5, 0xffff]);
  plan.answered++;
  if (k < 45) {
    plan.reads.set(handle, len);
    return request(CMD.READ, flags, handle, offset, len);
  }
  if (k < 75) {
    // A write carries its payload unless it is larger than the server takes (then it is refused and, per the spec, its bytes skipped).
    const l = Math.min(len, ctx.maxRequest);
    return request(CMD.WRITE, flags, handle, offset, l, randomBytes(rng, l));
  }
  if (k < 80) return request(CMD.FLUSH, flags, handle, chance(rng, 0.8) ? 0n : offset, chance(rng, 0.8) ? 0 : len);
  if (k < 85) return request(CMD.TRIM, flags, handle, offset, len);
  if (k < 90) return request(CMD.WRITE_ZEROES, flags, handle, offset, len);
  if (k < 94) return request(CMD.BLOCK_STATUS, flags, handle, offset, len);
  if (k < 97) return request(CMD.CACHE, flags, handle, offset, len);
  return request(8 + rng.int(0xfff0), flags, handle, offset, chance(rng, 0.5) ? 0 : len);
}

/** The session's last blow. */
function blow(rng: Rng, handle: number, sample: Buffer): { bytes: Buffer; kind: string } {
  switch (rng.int(6)) {
    case 0: return { bytes: mutateBytes(rng, sample).subarray(0, 28), kind: 'bad-header' };
    case 1: return { bytes: request(CMD.WRITE, 0, handle, 0n, pick(rng, [0x7fffffff, 0xffffffff, 1 << 26]), randomBytes(rng, rng.int(4096))), kind: 'short-write' };
    case 2: return { bytes: sample.subarray(0, rng.int(28)), kind: 'cut-header' };
    case 3: return { bytes: Buffer.concat([request(CMD.DISC, 0, handle, 0n, 0), randomBytes(rng, rng.int(256))]), kind: 'disc-then-garbage' };
    case 4: return { bytes: randomBytes(rng, 1 + rng.int(4096)), kind: 'garbage' };
    default: return { bytes: Buffer.concat([u32(pick(rng, INTERESTING_U32)), sample.subarray(4, 28)]), kind: 'bad-magic' };
  }
}

/** Bytes no phase accepts: a bad option or request magic. */
export const NBD_TERMINATOR = Buffer.alloc(28);

/** Session `index` of the run seeded `seed`. */
export function nbdSession(seed: number, index: number, ctx: NbdFuzzContext): NbdSession {
  const rng = new Rng((seed * 1_000_033 + index) >>> 0);
  const plan: NbdPlan = { options: [], reads: new Map(), answered: 0 };
  const kind = rng.int(100);
  if (kind < 4) return { bytes: [randomBytes(rng, 1 + rng.int(4096))], frames: 0, requests: 0, kind: 'random-bytes', plan: { ...plan, options: [-1] }, fin: true };
  const exp = chance(rng, 0.9) ? pick(rng, ctx.exports) : { name: 'no-such-export', size: 0 };
  const bytes: Buffer[] = [];
  const clean = handshake(rng, ctx, bytes, plan, exp.name);
  const t: Target = { size: exp.size };
  const n = clean && exp.size ? rng.int(ctx.maxRequests + 1) : rng.int(4);
  let last = request(CMD.READ, 0, 0, 0n, 512);
  for (let h = 1; h <= n; h++) bytes.push((last = benign(rng, ctx, t, h, plan)));
  const end = rng.int(10);
  let how = 'close';
  if (end < 6) {
    const b = blow(rng, n + 1, last);
    bytes.push(b.bytes);
    how = b.kind;
  } else if (end < 9) {
    bytes.push(request(CMD.DISC, 0, n + 1, 0n, 0));
    how = 'disc';
  }
  // A client that leaves, and one whose last write never brings its payload, end with a FIN.
  return { bytes, frames: 0, requests: n, kind: `${clean ? 'session' : 'handshake-mutated'}/${how}`, plan, fin: how === 'close' || how === 'short-write' || how === 'cut-header' };
}
