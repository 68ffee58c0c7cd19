/**
 * Hostile migration sessions, as a source on the network could send them: a
 * valid session built with src/wire's codecs (HELLO, PAGES of every encoding
 * with true and false keyed hashes, LZ4 bodies and XBZRLE deltas against the
 * versions the destination holds, MAP, DEVICE_STATE, COMPLETE, DIGESTS), then
 * mutated. Most frames are mutated in ways the protocol allows (so the
 * destination keeps reading and the session stays long); each session ends with
 * one blow the protocol forbids (a bad header, a broken payload, JSON fields of
 * the wrong kind, a truncated frame), with the normal end, or just a close.
 * Some sessions are random bytes. A session is a pure function of (seed, index).
 */
import { Rng } from '../../src/util/rng.ts';
import {
  CAPABILITIES, ENCODING, FRAMES, FRAME_HEADER_BYTES, MAP_NO_BLOCK, MAX_REF_RUN, PAGE_SIZE, PROTOCOL_NAME, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
  PageBatch, XBZRLE_LIMIT, encodeMap, lz4Compress, pageHash, sampleBlocks, xbzrleEncode, type FrameName, type Hello,
} from '../../src/wire/index.ts';
import { chance, mutateBytes, mutateJson, pick, randomBytes, INTERESTING_U32 } from './mutate.ts';

/** What a session is built against: the guest size the destination expects and the disk both sides see. */
export interface MigrationFuzzContext {
  memoryBytes: number;
  /** The disk's bytes (small), to make references whose keyed hash is true. */
  disk: Buffer;
  diskSpec: string;
  /** Longest run of frames before the session's last blow (the average is about half). */
  maxFrames: number;
}

export interface FuzzSession {
  /** The bytes to send, in order. */
  bytes: Buffer[];
  /** Half-close after them: the session is about a peer that leaves mid-way. */
  fin?: boolean;
  frames: number;
  /** How the session was made and how it ends, for the report. */
  kind: string;
}

export interface Frame {
  type: number;
  flags: number;
  payload: Buffer;
  /** The header's length, if not the payload's. */
  length?: number;
}

export function encodeFrame(f: Frame): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  h.writeUInt16BE(f.type, 0);
  h.writeUInt16BE(f.flags, 2);
  h.writeUInt32BE(f.length ?? f.payload.length, 4);
  return Buffer.concat([h, f.payload]);
}

const json = (name: FrameName, body: object): Frame => ({ type: FRAMES[name].type, flags: 0, payload: Buffer.from(JSON.stringify(body)) });

class Builder {
  readonly pages: number;
  readonly blocks: number;
  readonly key: Buffer;
  seq = 1;
  /** Only what a correct source sends (true hashes, known encodings): the destination owes nothing and gets to verify. */
  clean = false;
  /** The session's end leaves a frame cut short: only a FIN ends it. */
  cut = false;
  /** Pages whose newest entry carried bytes made here, and that version: an XBZRLE delta goes against it. */
  private readonly held = new Map<number, { seq: number; bytes: Buffer }>();

  constructor(readonly rng: Rng, readonly ctx: MigrationFuzzContext) {
    this.pages = ctx.memoryBytes / PAGE_SIZE;
    this.blocks = Math.floor(ctx.disk.length / PAGE_SIZE);
    this.key = randomBytes(rng, 32);
  }

  block(b: number, count = 1): Buffer {
    return this.ctx.disk.subarray(b * PAGE_SIZE, (b + count) * PAGE_SIZE);
  }

  hello(): Hello {
    const sample = sampleBlocks(this.key, this.blocks).map((block) => ({ block, hash: pageHash(this.key, this.block(block)).toString('hex') }));
    return {
      protocol: PROTOCOL_NAME,
      versionMin: PROTOCOL_VERSION_MIN,
      versionMax: PROTOCOL_VERSION,
      capabilities: [...CAPABILITIES],
      guest: { name: `fuzz-${this.rng.int(1000)}`, workload: 'idle', options: { seed: 1 }, memoryBytes: this.ctx.memoryBytes, pageSize: PAGE_SIZE, regions: [{ firstPage: 0, pages: this.pages }] },
      storage: { spec: this.ctx.diskSpec, description: 'fuzz', size: this.ctx.disk.length, sample },
      key: this.key.toString('hex'),
      strategy: 'p2b',
    };
  }

  /** A PAGES frame the protocol allows: every encoding, references true or false, an unknown encoding now and then. */
  pagesFrame(): Frame {
    const { rng } = this;
    const n = chance(rng, 0.01) ? 1 + rng.int(256) : 1 + rng.int(8);
    const batch = new PageBatch(n);
    for (let i = 0; i < n; i++) {
      const kind = rng.int(100);
      const page = rng.int(this.pages);
      if (kind < 14) this.addBytes(batch, page, randomBytes(rng, PAGE_SIZE), false);
      else if (kind < 20) this.addBytes(batch, page, compressiblePage(rng), true);
      else if (kind < 26 && this.held.has(page)) this.addDelta(batch, page);
      else if (kind < 50) {
        batch.addZero(page, this.seq++);
        this.held.delete(page);
      } else this.addRef(batch, page, kind < 53 ? 2 + rng.int(MAX_REF_RUN - 1) : 1);
    }
    let payload = batch.take();
    if (!this.clean && chance(rng, 0.05)) payload = withUnknownEncoding(rng, payload, rng.int(this.pages), this.seq++);
    return { type: FRAMES.PAGES.type, flags: chance(rng, 0.05) ? rng.u32() & 0xffff : 0, payload };
  }

  /** The page FULL, or LZ4 when asked and it shrinks; the destination then holds these bytes. */
  private addBytes(batch: PageBatch, page: number, bytes: Buffer, lz4: boolean): void {
    const seq = this.seq++;
    const body = lz4 ? lz4Compress(bytes) : null;
    if (body) batch.addLz4(page, seq, body);
    else batch.addFull(page, seq, bytes);
    this.held.set(page, { seq, bytes });
  }

  /** A few bytes of a held page changed, as an XBZRLE delta against the version the destination holds. */
  private addDelta(batch: PageBatch, page: number): void {
    const base = this.held.get(page)!;
    const bytes = Buffer.from(base.bytes);
    for (let k = 1 + this.rng.int(8); k > 0; k--) bytes[this.rng.int(PAGE_SIZE)] = this.rng.int(256);
    const delta = Buffer.allocUnsafe(PAGE_SIZE);
    const n = xbzrleEncode(base.bytes, bytes, delta, XBZRLE_LIMIT);
    if (n < 0) return this.addBytes(batch, page, bytes, false);
    const seq = this.seq++;
    batch.addXbzrle(page, seq, base.seq, delta.subarray(0, n));
    this.held.set(page, { seq, bytes });
  }

  private addRef(batch: PageBatch, page: number, count: number): void {
    const first = Math.min(page, this.pages - count);
    const block = this.rng.int(this.blocks - count + 1);
    const hash = this.clean || chance(this.rng, 0.8) ? pageHash(this.key, this.block(block, count)) : randomBytes(this.rng, 16);
    batch.addRef(first, this.seq, block, count, hash);
    this.seq += count;
    for (let i = 0; i < count; i++) this.held.delete(first + i);
  }

  mapFrame(): Frame {
    const entries = Array.from({ length: 1 + this.rng.int(16) }, () => [this.rng.int(this.pages), chance(this.rng, 0.2) ? null : this.rng.int(this.blocks)] as [number, number | null]);
    return { type: FRAMES.MAP.type, flags: 0, payload: encodeMap(entries) };
  }

  deviceFrame(): Frame {
    const { rng } = this;
    const payload = chance(rng, 0.5) ? Buffer.from(JSON.stringify(mutateJson(rng, { version: 1, steps: rng.int(100), rng: [1, 2, 3, 4] }))) : randomBytes(rng, rng.int(2048));
    return { type: FRAMES.DEVICE_STATE.type, flags: 0, payload };
  }

  /** One frame the destination must accept in RECEIVING. */
  benign(previous: Frame | undefined): Frame {
    const k = this.rng.int(100);
    if (k < 5 && previous) return previous; // a duplicate: its versions are older than what arrived
    if (k < 8) return this.mapFrame();
    if (k < 10) return this.deviceFrame();
    return this.pagesFrame();
  }

  /** One frame the destination must refuse (or at least survive). */
  blow(frame: Frame): Frame {
    const { rng } = this;
    switch (rng.int(7)) {
      case 0: return { ...frame, type: pick(rng, [0, FRAMES.HELLO.type, FRAMES.WELCOME.type, FRAMES.RESUMED.type, FRAMES.PAGE_REQUEST.type, FRAMES.PROGRESS.type, 12, 255, 0xffff]) };
      case 1: // a length the payload does not have
        this.cut = true;
        return { ...frame, length: pick(rng, INTERESTING_U32) };
      case 2: return { ...frame, payload: mutateBytes(rng, frame.payload, this.pagesFrame().payload) };
      case 3: return { ...frame, payload: pagesWith(rng, this.pages) };
      case 4: // cut short, then closed
        this.cut = true;
        return { ...frame, payload: frame.payload.subarray(0, rng.int(frame.payload.length)), length: frame.payload.length };
      case 5: return json('COMPLETE', mutateJson(rng, { lastSeq: this.seq }));
      default: return { type: FRAMES.MAP.type, flags: 0, payload: mutateBytes(rng, this.mapFrame().payload) };
    }
  }
}

const FIRST_UNKNOWN_ENCODING = Math.max(...Object.values(ENCODING)) + 1;

/** A page as heaps hold them: runs of zeros and a few repeated byte values, so LZ4 shrinks it. */
function compressiblePage(rng: Rng): Buffer {
  const page = Buffer.alloc(PAGE_SIZE);
  for (let at = 0; at < PAGE_SIZE; at += 64) if (chance(rng, 0.5)) page.fill(rng.int(4), at, at + 64);
  return page;
}

/** Appends an entry of an encoding nobody knows (the receiver skips it by its length and asks for the page). */
function withUnknownEncoding(rng: Rng, payload: Buffer, page: number, seq: number): Buffer {
  const body = randomBytes(rng, rng.int(64));
  const e = Buffer.alloc(12);
  e.writeUInt32BE(page, 0);
  e.writeUInt32BE(seq, 4);
  e.writeUInt8(FIRST_UNKNOWN_ENCODING + rng.int(256 - FIRST_UNKNOWN_ENCODING), 8);
  e.writeUInt16BE(body.length, 10);
  const out = Buffer.concat([payload, e, body]);
  out.writeUInt32BE(payload.readUInt32BE(0) + 1, 0);
  return out;
}

/** A PAGES payload with one entry the protocol forbids: page out of range, seq 0, wrong body length, a run out of bounds, a block past the disk, an LZ4 body that is no page. */
function pagesWith(rng: Rng, pages: number): Buffer {
  const e = Buffer.alloc(4 + 12 + 28);
  e.writeUInt32BE(pick(rng, [1, 2, 0xffffffff]), 0);
  e.writeUInt32BE(pick(rng, [pages, pages + 1, 0xffffffff, rng.int(pages)]), 4);
  e.writeUInt32BE(pick(rng, [0, 1, 0xffffffff]), 8);
  e.writeUInt8(pick(rng, [ENCODING.FULL, ENCODING.ZERO, ENCODING.REF, ENCODING.REF_RUN, ENCODING.LZ4]), 12);
  e.writeUInt16BE(pick(rng, [0, 24, 28, 4096, 0xffff]), 14);
  e.writeBigUInt64BE(BigInt(pick(rng, [0, 2 ** 32, 2 ** 52, MAP_NO_BLOCK])), 16);
  e.writeUInt32BE(pick(rng, [0, 1, 65, 0xffffffff]), 24);
  return e;
}

/** A frame no state accepts (type 0): whatever the destination was waiting for, it must now refuse and close. */
export const MIGRATION_TERMINATOR = Buffer.alloc(FRAME_HEADER_BYTES);

/** The frames after HELLO: many the protocol allows, then the end. */
function body(b: Builder, frames: Frame[], maxFrames: number): string {
  const { rng } = b;
  const end = rng.int(20);
  b.clean = end >= 10 && end < 16;
  const n = rng.int(maxFrames + 1);
  for (let i = 0; i < n; i++) frames.push(b.benign(frames[frames.length - 1]));
  if (end < 10) {
    frames.push(b.blow(b.benign(frames[frames.length - 1])));
    return 'blow';
  }
  if (end < 16) {
    // The normal end with digests that cannot match: the destination drains, then refuses.
    if (chance(rng, 0.5)) frames.push(b.mapFrame());
    frames.push(b.deviceFrame(), json('COMPLETE', { lastSeq: b.seq }), b.pagesFrame());
    const digests = { digests: [randomBytes(rng, 32).toString('hex')] };
    frames.push(json('DIGESTS', chance(rng, 0.3) ? mutateJson(rng, digests) : digests));
    return 'complete';
  }
  if (end < 19) {
    frames.push({ type: pick(rng, [0, FRAMES.WELCOME.type, FRAMES.HELLO.type, 99]), flags: 0, payload: Buffer.alloc(0) });
    return 'stop';
  }
  return 'leave';
}

/** A HELLO a destination with this context accepts (its storage sample true), keyed from `seed`. */
export function validHello(seed: number, ctx: MigrationFuzzContext): Hello {
  return new Builder(new Rng(seed), ctx).hello();
}

/** Session `index` of the run seeded `seed`. */
export function migrationSession(seed: number, index: number, ctx: MigrationFuzzContext): FuzzSession {
  const rng = new Rng((seed * 1_000_003 + index) >>> 0);
  const kind = rng.int(100);
  if (kind < 4) return { bytes: [randomBytes(rng, 1 + rng.int(4096))], frames: 0, kind: 'random-bytes', fin: true };
  if (kind < 7) {
    // Well-formed headers of any type around random payloads.
    const frames = Array.from({ length: 1 + rng.int(8) }, () => encodeFrame({ type: rng.int(14), flags: 0, payload: randomBytes(rng, rng.int(512)) }));
    return { bytes: frames, frames: frames.length, kind: 'random-frames', fin: true };
  }
  const b = new Builder(rng, ctx);
  const hello = b.hello();
  const frames: Frame[] = [];
  let how: string;
  if (kind < 22) {
    let h: object = hello;
    for (let i = 1 + rng.int(3); i > 0; i--) h = mutateJson(rng, h);
    frames.push(json('HELLO', h));
    how = 'hello-json';
  } else if (kind < 27) {
    frames.push({ ...json('HELLO', hello), payload: mutateBytes(rng, json('HELLO', hello).payload) });
    how = 'hello-bytes';
  } else {
    frames.push(json('HELLO', hello));
    how = 'session';
  }
  // After a mutated HELLO, which is likely refused, only a few frames: the rest would go unread.
  const end = body(b, frames, how === 'session' ? ctx.maxFrames : Math.min(ctx.maxFrames, 8));
  const bytes = frames.map(encodeFrame);
  if (end === 'blow' && chance(rng, 0.1)) bytes.push(randomBytes(rng, rng.int(1024))); // trailing garbage after the blow
  return { bytes, frames: frames.length, kind: `${how}/${end}`, fin: b.cut || end === 'leave' };
}
