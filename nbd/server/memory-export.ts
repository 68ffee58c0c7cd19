/**
 * An export held in RAM, sparse: 1 MiB chunks are allocated on first write, so a
 * large export costs only what is written to it (like nbdkit's memory plugin).
 */
import type { ExportBackend } from './export.ts';

const CHUNK = 1024 * 1024;

export class MemoryExport implements ExportBackend {
  private readonly chunks = new Map<number, Buffer>();
  readonly description: string;
  constructor(readonly size: number, readonly readOnly = false) {
    this.description = `memory ${size} bytes`;
  }

  async read(target: Buffer, offset: number): Promise<void> {
    this.forEachSpan(offset, target.length, (chunk, at, pos, n) => {
      if (chunk) chunk.copy(target, pos, at, at + n);
      else target.fill(0, pos, pos + n);
    });
  }

  async write(data: Buffer, offset: number): Promise<void> {
    this.forEachSpan(offset, data.length, (chunk, at, pos, n, index) => {
      const c = chunk ?? this.allocate(index);
      data.copy(c, at, pos, pos + n);
    });
  }

  async flush(): Promise<void> {}

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.forEachSpan(offset, length, (chunk, at, _pos, n, index) => {
      if (!chunk) return;
      if (n === CHUNK) this.chunks.delete(index);
      else chunk.fill(0, at, at + n);
    });
  }

  async close(): Promise<void> {
    this.chunks.clear();
  }

  private allocate(index: number): Buffer {
    const c = Buffer.alloc(CHUNK);
    this.chunks.set(index, c);
    return c;
  }

  /** Calls fn for each chunk-sized span of [offset, offset+length). */
  private forEachSpan(
    offset: number,
    length: number,
    fn: (chunk: Buffer | undefined, at: number, pos: number, n: number, index: number) => void,
  ): void {
    let pos = 0;
    while (pos < length) {
      const abs = offset + pos;
      const index = Math.floor(abs / CHUNK);
      const at = abs % CHUNK;
      const n = Math.min(CHUNK - at, length - pos);
      fn(this.chunks.get(index), at, pos, n, index);
      pos += n;
    }
  }
}
