/**
 * The livemig wire protocol: frame header, frame types and page encodings.
 * docs/protocol.md has the sequence diagram, the destination's state machine and
 * the rules for changing versions; read it first.
 *
 * Every frame: type u16 | flags u16 | length u32 (big endian), then `length` bytes.
 * Type 0 is invalid, so a zeroed buffer never parses as a frame.
 */
export const PROTOCOL_VERSION = 2;
/** The oldest version this build still speaks. Raise it only with a breaking change. */
export const PROTOCOL_VERSION_MIN = 2;

export const FRAME_HEADER = 8;
export const MAX_FRAME = 16 * 1024 * 1024;
/**
 * Per guest page, what DEVICE_STATE and MAP may need beyond MAX_FRAME (about 9 and 8
 * bytes a page at most): an 8 GiB guest's device state is over 16 MiB.
 */
export const FRAME_BYTES_PER_PAGE = 16;

export const FRAME = {
  HELLO: 1, // source → destination, JSON: version window, capabilities, memory layout, storage sample, key
  WELCOME: 2, // destination → source, JSON: chosen version, storage match
  PAGES: 3, // source → destination, binary batch of page entries
  DEVICE_STATE: 4, // source → destination, JSON: the workload's device state
  COMPLETE: 5, // source → destination, JSON: stop-and-copy done (all pages and the device state sent)
  RESUMED: 6, // destination → source, JSON: verified and running
  ERROR: 7, // either way, JSON {code, message}: the migration is over
  PAGE_REQUEST: 8, // destination → source, binary: pages whose reference failed
  PROGRESS: 9, // destination → source, JSON: fetch queue counters
  MAP: 11, // source → destination, binary: p2b map corrections at pause (count u32, then page u32 | block u32;
  //          block 0xffffffff drops the page's mapping), sent before COMPLETE
  DIGESTS: 10, // source → destination, JSON: keyed per-region digests of memory at pause (sent after COMPLETE,
  //              so both sides hash at the same time)
} as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];
export const FRAME_NAMES: Record<number, string> = Object.fromEntries(Object.entries(FRAME).map(([k, v]) => [v, k]));

/**
 * Page entry: page u32 | seq u32 | encoding u8 | reserved u8 | length u16 | body.
 * The length lets a receiver skip encodings it does not know (it then asks for
 * the page in full), so adding an encoding does not break the format.
 */
export const PAGE_ENTRY_HEADER = 12;
export const ENCODING = {
  FULL: 1, // body: the 4096 bytes
  ZERO: 2, // no body
  REF: 3, // body: block u64 | keyed hash (16 bytes) of the page's content
  // Pages page..page+count-1 are blocks block..block+count-1, seq..seq+count-1 their
  // sequence numbers; body: block u64 | count u32 | keyed hash (16 bytes) of all of them.
  // One hash for a run halves hashing: most of the cost of a 4 KiB HMAC is per call.
  REF_RUN: 4,
} as const;
export const REF_BODY = 24;
export const REF_RUN_BODY = 28;
/** The longest run: a run whose block changed is re-sent whole, so keep it bounded (256 KiB). */
export const MAX_REF_RUN = 64;
export const HASH_BYTES = 16;

export class WireError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'WireError';
  }
}
