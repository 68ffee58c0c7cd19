/**
 * The content index's query protocol: JSON lines over a Unix or TCP socket, one
 * request per line, one reply per line in request order.
 *
 *   -> {"id":1,"op":"hello"}
 *   <- {"id":1,"ok":true,"protocol":1,"hash":"xxh64","blockSize":4096,
 *       "exports":[{"name":"vm1","seed":"<16 hex>","blocks":N,"entries":n,"capacity":c}]}
 *   -> {"id":2,"op":"lookup","export":"vm1","hashes":"<16 hex digits per hash, concatenated>"}
 *   <- {"id":2,"ok":true,"blocks":[812,-1,...]}          (one per hash, -1 = not indexed)
 *   -> {"id":3,"op":"stats","export":"vm1"}
 *   <- {"id":3,"ok":true,"stats":{...}}
 *   errors: {"id":…,"ok":false,"code":"CINDEX_…","error":"one line"}
 *
 * A hash is XXH64(block, seed) written big-endian in hex; each export has its own
 * seed, learnt from hello. A batch holds at most MAX_HASHES hashes; a line longer
 * than MAX_LINE closes the connection. Adding ops or reply fields keeps PROTOCOL;
 * changing the meaning of one bumps it.
 */
export const PROTOCOL = 1;
export const MAX_HASHES = 65_536;
/** A full batch's hex plus room for the rest of the request. */
export const MAX_LINE = MAX_HASHES * 16 + 4096;

export interface HelloExport {
  name: string;
  seed: string;
  blocks: number;
  entries: number;
  capacity: number;
}

export interface Hello {
  protocol: number;
  hash: string;
  blockSize: number;
  exports: HelloExport[];
}

/** Splits a byte stream into lines of at most MAX_LINE bytes; longer ones are an error. */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly onLine: (line: string) => void, private readonly maxLine = MAX_LINE) {}

  /** Feeds bytes; throws RangeError when a line exceeds the limit. */
  push(chunk: Buffer): void {
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      const part = chunk.subarray(start, nl);
      this.check(part.length);
      const line = this.pending.length ? Buffer.concat([...this.pending, part]).toString('utf8') : part.toString('utf8');
      this.pending = [];
      this.pendingBytes = 0;
      start = nl + 1;
      this.onLine(line);
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.check(rest.length);
      this.pending.push(rest);
      this.pendingBytes += rest.length;
    }
  }

  private check(more: number): void {
    if (this.pendingBytes + more > this.maxLine) throw new RangeError(`line longer than ${this.maxLine} bytes`);
  }
}
