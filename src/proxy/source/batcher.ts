/**
 * QEMU's stream into batches. Pages are kept as numbers (data copied into the batch's
 * page buffer, header fields noted); every other record is written back by QEMU's
 * stream writer (small ones packed together, device state as views of what came in).
 * A batch is sealed when its page buffer is full, when it holds a lot of other bytes
 * (device state), when QEMU's stream pauses (nothing for SEAL_IDLE_MS), or SEAL_MAX_MS
 * after it opened, so bytes never wait here for more.
 */
import type { BufferPool } from '../../../nbd/index.ts';
import { QemuStreamParser, QemuStreamWriter, type QemuRecord } from '../../qemu/stream/index.ts';
import { PAGE_SIZE } from '../../wire/index.ts';
import { Batch, BATCH_PAGES } from './batch.ts';

const SEAL_IDLE_MS = 1;
const SEAL_MAX_MS = 20;
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
  /** One timer, re-armed with refresh() (a new one every millisecond cost more than the batching saved); it may fire disarmed. */
  private readonly timer: NodeJS.Timeout;
  private armed = false;
  private opened = 0;
  private lastPush = 0;
  /** Batches sealed so far. */
  sealed = 0;

  constructor(private readonly pool: BufferPool, private readonly on: BatcherEvents) {
    this.timer = setTimeout(() => this.tick(), SEAL_IDLE_MS).unref();
  }

  /** Bytes of QEMU's stream parsed so far. */
  get offset(): number {
    return this.parser.offset;
  }

  /** Parses a chunk; throws the parser's refusal (QEMU_STREAM_*). */
  push(chunk: Buffer): void {
    this.lastPush = performance.now();
    this.parser.push(chunk, this.emit);
  }

  /** QEMU closed the stream: throws if it was cut short, else seals the last batch. */
  end(): void {
    this.parser.end(this.emit);
    this.seal();
  }

  /** Drops the batch being filled (the migration failed). */
  stop(): void {
    this.disarm();
    this.current = null;
  }

  private readonly emit = (r: QemuRecord): void => {
    if (r.kind === 'end') return;
    const b = this.current ?? this.open();
    if (r.kind === 'ram-page') {
      const p = b.pages++;
      b.piece[p] = b.pieces.push(p) - 1;
      r.data.copy(b.data, p * PAGE_SIZE);
      b.offset[p] = r.offset;
      b.blockName[p] = r.continued ? undefined : r.block;
      if (b.pages === BATCH_PAGES) this.seal();
      return;
    }
    this.on.record(r);
    this.writer.write(r, b.pieces as Buffer[]);
    if (r.kind === 'device-state' && (b.otherBytes += r.data.length) >= MAX_OTHER_BYTES) this.seal();
  };

  private open(): Batch {
    this.current = new Batch(this.pool.get(BATCH_PAGES * PAGE_SIZE));
    this.opened = performance.now();
    this.arm();
    return this.current;
  }

  private arm(): void {
    this.armed = true;
    this.timer.refresh();
  }

  private disarm(): void {
    this.armed = false;
  }

  /** Seals once the stream paused or the batch is old enough; otherwise looks again later. */
  private tick(): void {
    if (!this.armed) return;
    this.armed = false;
    const now = performance.now();
    if (now - this.lastPush >= SEAL_IDLE_MS || now - this.opened >= SEAL_MAX_MS) this.seal();
    else this.arm();
  }

  seal(): void {
    this.disarm();
    const b = this.current;
    this.current = null;
    if (b && b.pieces.length) this.sealed++, this.on.sealed(b);
    else if (b) this.pool.put(b.data);
  }
}
