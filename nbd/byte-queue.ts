/**
 * A queue of received chunks that protocol parsers consume by exact byte counts.
 * Chunks are kept as they arrived; bytes are copied only when a read spans chunks
 * or lands in a caller's buffer.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // bytes already consumed from chunks[0]
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Returns the next n bytes and consumes them. Caller checks `length >= n` first. */
  take(n: number): Buffer {
    const first = this.chunks[0];
    if (first && first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.copyInto(out, 0, n);
    return out;
  }

  /** Returns the next n bytes without consuming them. Caller checks `length >= n` first. */
  peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = Buffer.allocUnsafe(n);
    let pos = 0;
    for (let i = 0; pos < n; i++) {
      const c = this.chunks[i];
      const start = i === 0 ? this.head : 0;
      const count = Math.min(n - pos, c.length - start);
      c.copy(out, pos, start, start + count);
      pos += count;
    }
    return out;
  }

  /** Hands over everything still queued (used when another parser takes the stream). */
  drain(): Buffer[] {
    const rest = this.chunks.map((c, i) => (i === 0 ? c.subarray(this.head) : c));
    this.chunks = [];
    this.head = 0;
    this.length = 0;
    return rest;
  }

  /** Consumes up to n bytes into target[offset..]; returns how many were copied. */
  copyInto(target: Uint8Array, offset: number, n: number): number {
    let copied = 0;
    while (copied < n && this.chunks.length > 0) {
      const first = this.chunks[0];
      const count = Math.min(n - copied, first.length - this.head);
      first.copy(target, offset + copied, this.head, this.head + count);
      copied += count;
      this.advance(count);
    }
    return copied;
  }

  /** Drops up to n bytes; returns how many were dropped. */
  skip(n: number): number {
    let dropped = 0;
    while (dropped < n && this.chunks.length > 0) {
      const count = Math.min(n - dropped, this.chunks[0].length - this.head);
      dropped += count;
      this.advance(count);
    }
    return dropped;
  }

  private advance(n: number): void {
    this.head += n;
    this.length -= n;
    if (this.head === this.chunks[0].length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
