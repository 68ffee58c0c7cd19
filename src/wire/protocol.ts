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
/**
 * 4: HELLO carries no key on a TLS link (both ends derive it from the session), and a
 * destination refuses a source migrating another disk. 3 is no longer spoken: a v3
 * destination opens whatever disk HELLO names.
 */
export const PROTOCOL_VERSION = 4;
export const PROTOCOL_VERSION_MIN = 4;

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
  /** The QEMU_* frames: the migration carries a QEMU migration stream between two stream proxies. */
  QEMU_STREAM: 'qemu-stream',
  /** The destination takes the disk's lease from the source before it resumes (HELLO.lease). */
  LEASE: 'disk.lease',
} as const;
export type Capability = (typeof CAPABILITY)[keyof typeof CAPABILITY];
/** What the engine (livemig's own guests) speaks; a peer must speak the REQUIRED ones. */
export const CAPABILITIES: readonly Capability[] = [
  CAPABILITY.FULL, CAPABILITY.ZERO, CAPABILITY.REF, CAPABILITY.REF_RUN, CAPABILITY.LZ4, CAPABILITY.XBZRLE, CAPABILITY.RETURN_PATH, CAPABILITY.LEASE,
];
export const REQUIRED_CAPABILITIES: readonly Capability[] = [CAPABILITY.FULL, CAPABILITY.ZERO, CAPABILITY.RETURN_PATH];
/** What a QEMU stream proxy speaks, and requires of its peer: QEMU streams over a return path (no PAGES). */
export const QEMU_PROXY_CAPABILITIES: readonly Capability[] = [CAPABILITY.QEMU_STREAM, CAPABILITY.RETURN_PATH];

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
  // QEMU streams: used only after both sides listed `qemu-stream`.
  QEMU_STREAM: frame(12, 'QEMU_STREAM', 'source', 'binary', 4 * MiB),
  QEMU_END: frame(13, 'QEMU_END', 'source', 'json', 64 * KiB),
  QEMU_ACK: frame(14, 'QEMU_ACK', 'destination', 'binary', 16),
  QEMU_REF_REQUEST: frame(15, 'QEMU_REF_REQUEST', 'destination', 'binary', 64 * KiB),
  QEMU_REF_DATA: frame(16, 'QEMU_REF_DATA', 'source', 'binary', 12 + MAX_REF_RUN * PAGE_SIZE),
  QEMU_DONE: frame(17, 'QEMU_DONE', 'destination', 'json', 64 * KiB),
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
  /** After WELCOME a destination aborts a source that has sent no byte for this long (settable per listener). */
  IDLE: 30_000,
  /** A QEMU stream proxy gives up when its migration has moved no byte for this long (QEMU, link or storage stuck). */
  STALL: 60_000,
  /** The source proxy gives up on a destination proxy that has not sent QEMU_DONE after QEMU_END. */
  QEMU_DONE: 120_000,
} as const;

/** How often a receiving destination sends PROGRESS; the source's downtime estimate needs it. */
export const PROGRESS_INTERVAL_MS = 50;
/** A source that has sent nothing for this long sends an empty PAGES frame, so a healthy source never looks idle. */
export const SOURCE_KEEPALIVE_MS = 1000;

// --- QEMU streams ------------------------------------------------------------

/** The stream kind a HELLO names when the migration carries a QEMU migration stream. */
export const STREAM_KIND_QEMU = 'qemu';
/** QEMU's stream format the proxies carry (QEMU_VM_FILE_VERSION, as QEMU 7.2 and later write it). */
export const QEMU_STREAM_FORMAT = 3;
/** RAM blocks a HELLO may declare, and the longest RAM block id (QEMU writes ids with a one-byte length). */
export const MAX_QEMU_RAM_BLOCKS = 4096;
export const MAX_QEMU_BLOCK_ID = 255;
/** A QEMU_STREAM entry's header: kind u8 | length u32 (big endian), then `length` bytes of body. */
export const QEMU_ENTRY_HEADER = 5;
export const QEMU_ENTRY = {
  /** body: bytes of QEMU's stream, written to QEMU as they are (at least 1) */
  BYTES: 1,
  /** body: offset u64 | block u64 | count u32 | keyed hash (16 bytes) of the count pages */
  REF_RUN: 2,
} as const;
export type QemuEntryKind = (typeof QEMU_ENTRY)[keyof typeof QEMU_ENTRY];
/** Body lengths: BYTES has any length of at least 1 (0 here), REF_RUN exactly this. */
export const QEMU_ENTRY_BODY: Record<QemuEntryKind, number> = { [QEMU_ENTRY.BYTES]: 0, [QEMU_ENTRY.REF_RUN]: 36 };
/**
 * Inside a REF_RUN, each page after the first is preceded by 8 bytes: its RAM offset
 * plus these flags, big endian (QEMU's RAM_SAVE_FLAG_PAGE 0x08 | RAM_SAVE_FLAG_CONTINUE 0x20).
 */
export const QEMU_RUN_PAGE_FLAGS = 0x28;
/** The payload a source builds a QEMU_STREAM frame up to (a frame may hold up to its limit). */
export const QEMU_FRAME_TARGET = 1 << 20;
/** One range of a QEMU_REF_REQUEST: first u64 | pages u32. */
export const QEMU_REF_RANGE = 12;
