/**
 * QEMU's stream into batches: the parser's records are written back by QEMU's own
 * stream writer (small headers packed together, device state as views of what came
 * in), except each page's data, which is copied into the batch's page buffer. A
 * batch is sealed when its page buffer is full, when it holds a lot of other bytes
 * (device state), or SEAL_MS after it opened, so a pause in QEMU's stream never
 * leaves bytes waiting here.
 */
import type { BufferPool } from '../../../nbd/index.ts';
import { QemuStreamParser, QemuStreamWriter, type QemuRecord } from '../../qemu/stream/index.ts';
import { PAGE_SIZE } from '../../wire/index.ts';
import { Batch, BATCH_PAGES } from './batch.ts';

const SEAL_MS = 2;
/** Device state: seal after this many bytes, so a frame never waits for the whole of it. */
const MAX_OTHER_BYTES = 1 << 20;

export interface BatcherEvents {
  /** Every record but pages, before it is batched (setup records, counts). */
  record(r: QemuRecord): void;
  sealed(b: Batch): void;
}

export class Batcher {
  private readonly parser = new QemuStreamParser();
  private readonly writer = new QemuStreamWriter();
  private current: Batch | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly pool: BufferPool, private readonly on: BatcherEvents) {}

  /** Bytes of QEMU's stream parsed so far. */
  get offset(): number {
    return this.parser.offset;
  }

  /** Parses a chunk; throws the parser's refusal (QEMU_STREAM_*). */
  push(chunk: Buffer): void {
    this.parser.push(chunk, this.emit);
  }

  /** QEMU closed the stream: throws if it was cut short, else seals the last batch. */
  end(): void {
    this.parser.end(this.emit);
    this.seal();
  }

  /** Drops the batch being filled (the migration failed). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.current = null;
  }

  private readonly emit = (r: QemuRecord): void => {
    if (r.kind === 'end') return;
    const b = this.current ?? this.open();
    if (r.kind === 'ram-page') {
      const p = b.pages++;
      this.writer.write(r, b.pieces as Buffer[]); // the header, then the data view, which becomes p
      b.pieces[b.pieces.length - 1] = p;
      r.data.copy(b.data, p * PAGE_SIZE);
      b.offset[p] = r.offset;
      b.piece[p] = b.pieces.length - 1;
      b.continued[p] = r.continued ? 1 : 0;
      if (b.pages === BATCH_PAGES) this.seal();
      return;
    }
    this.on.record(r);
    this.writer.write(r, b.pieces as Buffer[]);
    if (r.kind === 'device-state' && (b.otherBytes += r.data.length) >= MAX_OTHER_BYTES) this.seal();
  };

  private open(): Batch {
    this.current = new Batch(this.pool.get(BATCH_PAGES * PAGE_SIZE));
    this.timer = setTimeout(() => this.seal(), SEAL_MS);
    return this.current;
  }

  seal(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const b = this.current;
    this.current = null;
    if (b && b.pieces.length) this.on.sealed(b);
    else if (b) this.pool.put(b.data);
  }
}
