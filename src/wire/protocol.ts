/**
 * The livemig migration protocol in one place: every number that travels on the
 * wire or that both sides must agree on. docs/protocol.md is its specification,
 * written so a compatible peer can be built from it alone; test/wire/protocol-doc
 * keeps the doc's tables and these in agreement.
 *
 * Every frame: type u16 | flags u16 | length u32 (big endian), then `length` bytes.
 * Type 0 is invalid, so a zeroed buffer never parses as a frame. `flags` is
 * reserved: senders send 0, receivers ignore it.
 *
 * Versioning: a new frame type, page encoding or capability does not change the
 * version, because a side uses one only after the peer listed its capability. A
 * change to an existing frame's layout or meaning does: raise PROTOCOL_VERSION,
 * and raise PROTOCOL_VERSION_MIN only when the old layout is no longer spoken.
 */
export const PROTOCOL_NAME = 'livemig';
/** 3: RESUMED says whether the guest runs and no longer carries benchmark data; DEVICE_STATE is opaque bytes. */
export const PROTOCOL_VERSION = 3;
export const PROTOCOL_VERSION_MIN = 3;

export const FRAME_HEADER_BYTES = 8;

/** Guest memory as the protocol sees it: 4 KiB pages in regions of at most 2^18 pages (1 GiB). */
export const PAGE_SIZE = 4096;
export const REGION_SHIFT = 18;
export const REGION_PAGES = 1 << REGION_SHIFT;
/** Pages per memory-digest chunk (64 KiB); a chunk never spans a region. */
export const DIGEST_CHUNK_PAGES = 16;
/** Bytes of the keyed hash a reference carries (HMAC-SHA-256, truncated), and of a digest (whole). */
export const HASH_BYTES = 16;
export const DIGEST_BYTES = 32;
/** Blocks sampled from the storage to decide both hosts see the same disk. */
export const STORAGE_SAMPLES = 16;
/** The longest reference run: a run whose check fails is re-sent whole, so keep it bounded (256 KiB). */
export const MAX_REF_RUN = 64;
/** Entries per PAGES frame a source sends (a receiver accepts any count that fits the frame limit). */
export const PAGES_PER_FRAME = 256;
/** In a MAP correction: the page has no mapping. */
export const MAP_NO_BLOCK = 0xffffffff;
/** Sequence numbers are u32 and start at 1 (0: no version seen yet); they never wrap. */
export const MAX_SEQ = 0xffffffff;
/** A page entry's header: page u32 | seq u32 | encoding u8 | reserved u8 | length u16. */
export const PAGE_ENTRY_HEADER = 12;

export const ENCODING = {
  /** body: the page's 4096 bytes */
  FULL: 1,
  /** no body: the page is all zeros */
  ZERO: 2,
  /** body: block u64 | keyed hash (16 bytes) of the page */
  REF: 3,
  /** body: block u64 | count u32 | keyed hash (16 bytes) of all `count` pages */
  REF_RUN: 4,
  /** body: size u32 little endian (4096) | the page as one LZ4 block */
  LZ4: 5,
  /** body: base seq u32 | XBZRLE delta against that version of the page */
  XBZRLE: 6,
} as const;
export type Encoding = (typeof ENCODING)[keyof typeof ENCODING];
type FixedEncoding = typeof ENCODING.FULL | typeof ENCODING.ZERO | typeof ENCODING.REF | typeof ENCODING.REF_RUN;
/** Body lengths of the fixed-size encodings. */
export const ENCODING_BODY: Record<FixedEncoding, number> = { [ENCODING.FULL]: PAGE_SIZE, [ENCODING.ZERO]: 0, [ENCODING.REF]: 24, [ENCODING.REF_RUN]: 28 };
/** Shortest and longest bodies of the variable-size encodings. */
export const ENCODING_BODY_RANGE: Record<Exclude<Encoding, FixedEncoding>, readonly [number, number]> = {
  [ENCODING.LZ4]: [5, PAGE_SIZE + 4],
  [ENCODING.XBZRLE]: [4, PAGE_SIZE + 4],
};

export const CAPABILITY = {
  FULL: 'pages.full',
  ZERO: 'pages.zero',
  REF: 'pages.ref',
  REF_RUN: 'pages.ref-run',
  LZ4: 'pages.lz4',
  XBZRLE: 'pages.xbzrle',
  RETURN_PATH: 'return-path',
} as const;
export type Capability = (typeof CAPABILITY)[keyof typeof CAPABILITY];
/** What this build speaks; a peer must speak the REQUIRED ones. */
export const CAPABILITIES: readonly Capability[] = Object.values(CAPABILITY);
export const REQUIRED_CAPABILITIES: readonly Capability[] = [CAPABILITY.FULL, CAPABILITY.ZERO, CAPABILITY.RETURN_PATH];

/** Which side sends a frame. */
export type Sender = 'source' | 'destination' | 'both';
/** How a frame's payload is encoded: JSON (UTF-8) or a binary layout (docs/protocol.md). */
export type Body = 'json' | 'binary';

/**
 * Frame sizes: a fixed bound, plus a bound per guest page for frames whose size
 * grows with the guest. Before HELLO is accepted the guest's size is unknown and
 * counts as 0, so an unauthenticated peer can make the receiver hold at most
 * the fixed bound of the one frame it may send.
 */
export interface FrameSpec {
  type: number;
  name: string;
  from: Sender;
  body: Body;
  maxBytes: number;
  bytesPerPage: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const frame = (type: number, name: string, from: Sender, body: Body, maxBytes: number, bytesPerPage = 0): FrameSpec => ({ type, name, from, body, maxBytes, bytesPerPage });

export const FRAMES = {
  HELLO: frame(1, 'HELLO', 'source', 'json', 64 * KiB),
  WELCOME: frame(2, 'WELCOME', 'destination', 'json', 64 * KiB),
  PAGES: frame(3, 'PAGES', 'source', 'binary', 4 * MiB),
  DEVICE_STATE: frame(4, 'DEVICE_STATE', 'source', 'binary', 16 * MiB, 16),
  COMPLETE: frame(5, 'COMPLETE', 'source', 'json', 64 * KiB),
  RESUMED: frame(6, 'RESUMED', 'destination', 'json', 64 * KiB),
  ERROR: frame(7, 'ERROR', 'both', 'json', 64 * KiB),
  PAGE_REQUEST: frame(8, 'PAGE_REQUEST', 'destination', 'binary', 64 * KiB, 4),
  PROGRESS: frame(9, 'PROGRESS', 'destination', 'json', 64 * KiB),
  DIGESTS: frame(10, 'DIGESTS', 'source', 'json', 64 * KiB, 1),
  MAP: frame(11, 'MAP', 'source', 'binary', 64 * KiB, 8),
} as const;
export type FrameName = keyof typeof FRAMES;
export const FRAME = Object.fromEntries(Object.entries(FRAMES).map(([k, v]) => [k, v.type])) as { [K in FrameName]: (typeof FRAMES)[K]['type'] };
export type FrameType = (typeof FRAME)[FrameName];
export const FRAME_BY_TYPE: ReadonlyMap<number, FrameSpec> = new Map(Object.values(FRAMES).map((f) => [f.type, f]));

/** The largest payload of a frame type for a guest of `memoryBytes` (0 before HELLO). */
export function frameLimit(spec: FrameSpec, memoryBytes: number): number {
  return spec.maxBytes + spec.bytesPerPage * Math.ceil(memoryBytes / PAGE_SIZE);
}

/** Timeouts both sides apply (ms). */
export const TIMEOUT = {
  /** The source's TCP connect. */
  CONNECT: 10_000,
  /** A destination drops a peer that has not sent a whole HELLO by then. */
  HELLO: 10_000,
  /** The source gives up on a destination that has not answered HELLO (it may allocate memory first). */
  WELCOME: 60_000,
  /** The source gives up on a destination that has not sent RESUMED after COMPLETE (default; migrate may set it). */
  RESUMED: 120_000,
  /** TCP keepalive probes on the migration link, so a vanished peer is noticed. */
  KEEPALIVE: 10_000,
} as const;

/** How often a receiving destination sends PROGRESS; the source's downtime estimate needs it. */
export const PROGRESS_INTERVAL_MS = 50;
