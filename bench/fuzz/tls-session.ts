/**
 * Hostile sessions from peers without credentials, against a destination that has
 * them: plain migration sessions (migration-session.ts: frames and random bytes,
 * no TLS at all), ClientHellos replayed from a legitimate client or mutated
 * (structure-aware: lengths kept true or made to lie, fragments, other record
 * types and versions), and real TLS clients with the wrong credentials
 * (intruder.ts). Each must be dropped in the handshake, before any livemig byte
 * is read. A session is a pure function of (seed, index) and the captured hellos.
 */
import { Rng } from '../../src/util/rng.ts';
import { FRAMES } from '../../src/wire/index.ts';
import { migrationSession, validHello, encodeFrame, type FuzzSession, type MigrationFuzzContext } from './migration-session.ts';
import { chance, mutateBytes, pick, randomBytes } from './mutate.ts';
import type { Intruder } from './credentials.ts';

/** A real TLS client with wrong credentials rather than bytes. */
export interface IntruderSession extends FuzzSession {
  intruder: Intruder;
}

const HANDSHAKE = 22;

/** A TLS record: type, version, then the body (its header's length may lie). */
function record(type: number, body: Buffer, version: number, length = body.length): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt8(type, 0);
  h.writeUInt16BE(version, 1);
  h.writeUInt16BE(length & 0xffff, 3);
  return Buffer.concat([h, body]);
}

function mutateTimes(rng: Rng, data: Buffer, donor: Buffer): Buffer {
  let b = data;
  for (let n = 1 + rng.int(3); n > 0; n--) b = mutateBytes(rng, b, donor);
  return b;
}

/** One hostile ClientHello in one or more records, built from a captured one (`hello`: a whole record). */
function garbageHello(rng: Rng, hello: Buffer, donor: Buffer): { records: Buffer[]; how: string } {
  const version = hello.readUInt16BE(1);
  const msg = hello.subarray(5); // the handshake message: type, 3-byte length, ClientHello
  switch (rng.int(8)) {
    case 0: return { records: [hello], how: 'replay' };
    case 1: return { records: [mutateTimes(rng, hello, donor)], how: 'bytes' };
    case 2: { // the ClientHello's fields mutated, both lengths kept true
      const body = mutateTimes(rng, msg.subarray(4), donor.subarray(9));
      const m = Buffer.concat([msg.subarray(0, 4), body]);
      m.writeUIntBE(body.length & 0xffffff, 1, 3);
      return { records: [record(HANDSHAKE, m, version)], how: 'body' };
    }
    case 3: return { records: [record(HANDSHAKE, msg, version, pick(rng, [0, 1, 4, 0x4000, 0x4001, 0x4800, 0xffff]))], how: 'record-length' };
    case 4: {
      const m = Buffer.from(msg);
      m.writeUIntBE(pick(rng, [0, 1, msg.length - 3, 0x4000, 0x10000, 0xffffff]), 1, 3);
      return { records: [record(HANDSHAKE, m, version)], how: 'handshake-length' };
    }
    case 5: { // fragmented, as TLS allows, a piece perhaps mutated
      const records: Buffer[] = [];
      for (let at = 0; at < msg.length;) {
        const n = 1 + rng.int(64);
        records.push(record(HANDSHAKE, msg.subarray(at, at + n), version));
        at += n;
      }
      const i = rng.int(records.length);
      if (chance(rng, 0.5)) records[i] = mutateBytes(rng, records[i], donor);
      return { records, how: 'fragments' };
    }
    case 6: return { records: [record(pick(rng, [0, 20, 21, 23, 24, 0x80, 255]), chance(rng, 0.5) ? msg : randomBytes(rng, rng.int(512)), version)], how: 'content-type' };
    default: {
      if (chance(rng, 0.3)) { // an SSLv2-style CLIENT-HELLO header
        const body = randomBytes(rng, rng.int(256));
        return { records: [Buffer.concat([Buffer.from([0x80 | (body.length >> 8), body.length & 0xff, 1, 3, 1]), body])], how: 'sslv2' };
      }
      return { records: [record(HANDSHAKE, msg, pick(rng, [0x0200, 0x0300, 0x0304, 0xfefd, 0xffff]))], how: 'version' };
    }
  }
}

export interface UnauthenticatedContext extends MigrationFuzzContext {
  /** ClientHellos captured from real clients (the legitimate one first), each a whole record. */
  hellos: Buffer[];
  intruders: Intruder[];
}

/** Session `index` of the run seeded `seed` against a destination with credentials. */
export function unauthenticatedSession(seed: number, index: number, ctx: UnauthenticatedContext): FuzzSession | IntruderSession {
  const rng = new Rng((seed * 7_000_003 + index * 31 + 17) >>> 0);
  const k = rng.int(100);
  if (k < 40) {
    const s = migrationSession(seed, index, ctx);
    return { ...s, kind: `plain/${s.kind.split('/')[0]}` };
  }
  if (k < 75) {
    const { records, how } = garbageHello(rng, pick(rng, ctx.hellos), pick(rng, ctx.hellos));
    let frames = records.length;
    if (chance(rng, 0.15)) { // a peer that goes on as if the handshake were over
      records.push(encodeFrame({ type: FRAMES.HELLO.type, flags: 0, payload: Buffer.from(JSON.stringify(validHello(index, ctx))) }));
      frames++;
    }
    return { bytes: records, frames, kind: `client-hello/${how}`, fin: chance(rng, 0.6) };
  }
  const intruder = pick(rng, ctx.intruders);
  return { bytes: [], frames: 1, kind: `intruder/${intruder.name}`, intruder };
}

/** What an intruder sends once its side of the handshake completes: a HELLO a destination that let it in would answer. */
export function intruderProbe(ctx: MigrationFuzzContext): Buffer {
  return encodeFrame({ type: FRAMES.HELLO.type, flags: 0, payload: Buffer.from(JSON.stringify(validHello(1, ctx))) });
}
