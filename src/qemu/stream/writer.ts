/**
 * Writes records back into QEMU's stream format: the parser's records, written in
 * order, give back the parsed bytes exactly. Page data and device state go out as
 * the caller's buffers (no copy); the small headers are packed into a shared arena,
 * adjacent ones merged, so a socket gets few, large pieces (writev-friendly).
 */
import { QEMU_VM_FILE_MAGIC, RAM_FLAG, SECTION, TARGET_PAGE_SIZE } from './constants.ts';
import type { QemuRecord, SectionType } from './records.ts';

const ARENA = 64 << 10;
const SECTION_BYTE: Record<SectionType, number> = { start: SECTION.START, part: SECTION.PART, end: SECTION.END, full: SECTION.FULL };

export class QemuStreamWriter {
  private arena = Buffer.allocUnsafe(ARENA);
  private used = 0;
  /** The arena piece last pushed: when it is still the last one in `out`, the next header extends it. */
  private lastPiece: Buffer | null = null;
  private lastStart = 0;

  /** Appends the bytes of `r` to `out` (pieces to write in order). */
  write(r: QemuRecord, out: Buffer[]): void {
    switch (r.kind) {
      case 'header': return this.small(out, 8, (b) => (b.writeUInt32BE(QEMU_VM_FILE_MAGIC, 0), b.writeUInt32BE(r.version, 4)));
      case 'configuration': return this.configuration(r, out);
      case 'section': return this.section(r, out);
      case 'footer': return this.small(out, 5, (b) => (b[0] = SECTION.FOOTER, b.writeUInt32BE(r.sectionId, 1)));
      case 'command':
        this.small(out, 5, (b) => (b[0] = SECTION.COMMAND, b.writeUInt16BE(r.command, 1), b.writeUInt16BE(r.data.length, 3)));
        return this.big(out, r.data);
      case 'ram-mem-size': return this.be64(out, r.totalBytes + RAM_FLAG.MEM_SIZE);
      case 'ram-block':
        this.shortString(out, r.block);
        return this.be64(out, r.usedLength);
      case 'ram-zero':
        this.pageHeader(out, r.offset, RAM_FLAG.ZERO, r.continued, r.block);
        return this.small(out, 1, (b) => (b[0] = r.fill));
      case 'ram-page':
        if (r.data.length !== TARGET_PAGE_SIZE) throw new RangeError(`a page has ${TARGET_PAGE_SIZE} bytes, not ${r.data.length}`);
        this.pageHeader(out, r.offset, RAM_FLAG.PAGE, r.continued, r.block);
        return this.big(out, r.data);
      case 'ram-eos': return this.be64(out, RAM_FLAG.EOS);
      case 'device-state': return this.big(out, r.data);
      case 'end': return; // its bytes went out as device state
    }
  }

  /** Convenience: the bytes of a list of records as one buffer (for tests and small streams). */
  static toBuffer(records: Iterable<QemuRecord>): Buffer {
    const w = new QemuStreamWriter();
    const out: Buffer[] = [];
    for (const r of records) w.write(r, out);
    return Buffer.concat(out);
  }

  private configuration(r: Extract<QemuRecord, { kind: 'configuration' }>, out: Buffer[]): void {
    const name = Buffer.from(r.machine, 'latin1');
    this.small(out, 5 + name.length, (b) => (b[0] = SECTION.CONFIGURATION, b.writeUInt32BE(name.length, 1), name.copy(b, 5)));
    for (const sub of r.subsections) {
      this.small(out, 1, (b) => (b[0] = SECTION.SUBSECTION));
      this.shortString(out, sub.name);
      this.small(out, 4, (b) => b.writeUInt32BE(sub.version, 0));
      this.big(out, sub.body);
    }
  }

  private section(r: Extract<QemuRecord, { kind: 'section' }>, out: Buffer[]): void {
    this.small(out, 5, (b) => (b[0] = SECTION_BYTE[r.type], b.writeUInt32BE(r.sectionId, 1)));
    if (r.type === 'part' || r.type === 'end') return;
    this.shortString(out, r.idstr);
    this.small(out, 8, (b) => (b.writeUInt32BE(r.instanceId, 0), b.writeUInt32BE(r.versionId, 4)));
  }

  private pageHeader(out: Buffer[], offset: number, flag: number, continued: boolean, block: string): void {
    this.be64(out, offset + flag + (continued ? RAM_FLAG.CONTINUE : 0));
    if (!continued) this.shortString(out, block);
  }

  private be64(out: Buffer[], v: number): void {
    this.small(out, 8, (b) => (b.writeUInt32BE(Math.floor(v / 2 ** 32), 0), b.writeUInt32BE(v >>> 0, 4)));
  }

  private shortString(out: Buffer[], s: string): void {
    const len = Buffer.byteLength(s, 'latin1');
    if (len > 255) throw new RangeError(`id string of ${len} bytes (at most 255)`);
    this.small(out, 1 + len, (b) => (b[0] = len, b.write(s, 1, 'latin1')));
  }

  private big(out: Buffer[], data: Buffer): void {
    if (data.length) out.push(data);
  }

  /** Writes n bytes with `fill` into the arena; merges with the previous arena piece when adjacent. */
  private small(out: Buffer[], n: number, fill: (b: Buffer) => void): void {
    if (this.used + n > this.arena.length) {
      this.arena = Buffer.allocUnsafe(Math.max(ARENA, n));
      this.used = 0;
      this.lastPiece = null;
    }
    fill(this.arena.subarray(this.used, this.used + n));
    this.used += n;
    const extend = this.lastPiece !== null && out.length > 0 && out[out.length - 1] === this.lastPiece;
    if (!extend) this.lastStart = this.used - n;
    this.lastPiece = this.arena.subarray(this.lastStart, this.used);
    if (extend) out[out.length - 1] = this.lastPiece;
    else out.push(this.lastPiece);
  }
}
