/**
 * The `ram` section's body: 64-bit records whose low 12 bits are flags and the rest
 * the page offset in its RAMBlock. MEM_SIZE (at START) declares the blocks; ZERO and
 * PAGE name their block unless CONTINUE says "same as the last one" (which carries
 * across sections); EOS ends the body, and the section footer follows. xbzrle,
 * compress, RDMA hooks and multifd flushes are refused, naming the capability.
 */
import type { Cursor } from './cursor.ts';
import { QemuStreamError } from './errors.ts';
import { RAM_FLAG, SECTION, TARGET_PAGE_SIZE } from './constants.ts';
import type { FooterRecord, QemuRecord, RamBlockRecord, RamPageRecord, RamZeroRecord } from './records.ts';
import type { ParserState } from './state.ts';

const MAX_BLOCKS = 4096;
const KNOWN_FLAGS = Object.values(RAM_FLAG).reduce((a, b) => a | b, 0);

const malformed = (message: string) => new QemuStreamError('QEMU_STREAM_MALFORMED', message);

export function parseRamRecord(c: Cursor, s: ParserState): QemuRecord {
  if (s.memSizeRemaining > 0) return parseBlockEntry(c, s);
  const at = c.offset;
  const raw = c.be64('RAM record address');
  const flags = raw % TARGET_PAGE_SIZE;
  const offset = raw - flags;
  refuseCapabilities(flags, at);
  switch (flags & ~RAM_FLAG.CONTINUE) {
    case RAM_FLAG.PAGE:
      return parsePage(c, s, offset, flags, at);
    case RAM_FLAG.ZERO:
      return parseZero(c, s, offset, flags, at);
    case RAM_FLAG.EOS:
      if (raw !== RAM_FLAG.EOS) throw malformed(`EOS with extra bits 0x${raw.toString(16)} at byte ${at}`);
      s.phase = 'ram-footer';
      return { kind: 'ram-eos' };
    case RAM_FLAG.MEM_SIZE:
      if (s.currentSectionType !== 'start' || s.blocks.size > 0 || flags !== RAM_FLAG.MEM_SIZE || offset === 0) throw malformed(`MEM_SIZE out of place at byte ${at}`);
      s.memSizeRemaining = offset;
      return { kind: 'ram-mem-size', totalBytes: offset };
    default:
      throw malformed(`RAM record flags 0x${flags.toString(16)} at byte ${at} make no record`);
  }
}

/** Flags that come only with a capability livemig cannot carry, or that no QEMU it knows writes. */
const REFUSED_FLAGS = RAM_FLAG.XBZRLE | RAM_FLAG.COMPRESS_PAGE | RAM_FLAG.MULTIFD_FLUSH | RAM_FLAG.HOOK | (TARGET_PAGE_SIZE - 1 - KNOWN_FLAGS);

function refuseCapabilities(flags: number, at: number): void {
  if ((flags & REFUSED_FLAGS) === 0) return; // the common case, before any closure is made: this runs for every page
  const refuse = (what: string, capability: ConstructorParameters<typeof QemuStreamError>[2]) => {
    throw new QemuStreamError('QEMU_STREAM_UNSUPPORTED', `${what} at byte ${at}: not supported (turn the ${capability} capability off)`, capability);
  };
  if (flags & RAM_FLAG.XBZRLE) refuse('an XBZRLE page (xbzrle delta)', 'xbzrle');
  if (flags & RAM_FLAG.COMPRESS_PAGE) refuse('a compressed page', 'compress');
  if (flags & RAM_FLAG.MULTIFD_FLUSH) refuse('a multifd flush', 'multifd');
  if (flags & RAM_FLAG.HOOK) refuse('an RDMA hook', 'rdma');
  if (flags & ~KNOWN_FLAGS) throw new QemuStreamError('QEMU_STREAM_UNSUPPORTED', `unknown RAM record flag 0x${(flags & ~KNOWN_FLAGS).toString(16)} at byte ${at} (a newer QEMU?)`);
  if (flags & RAM_FLAG.FULL) throw new QemuStreamError('QEMU_STREAM_UNSUPPORTED', `obsolete RAM_SAVE_FLAG_FULL at byte ${at}`);
}

function parseBlockEntry(c: Cursor, s: ParserState): RamBlockRecord {
  const block = c.shortString();
  const usedLength = c.be64('RAMBlock length');
  if (usedLength === 0 || usedLength > s.memSizeRemaining || usedLength % TARGET_PAGE_SIZE) throw malformed(`RAMBlock ${JSON.stringify(block)} of ${usedLength} bytes does not fit MEM_SIZE`);
  if (s.blocks.has(block) || s.blocks.size >= MAX_BLOCKS) throw malformed(`RAMBlock ${JSON.stringify(block)} declared twice, or too many blocks`);
  s.blocks.set(block, usedLength);
  s.memSizeRemaining -= usedLength;
  return { kind: 'ram-block', block, usedLength };
}

/** The block a ZERO or PAGE record is in: named, or the previous record's for CONTINUE. */
function blockOf(c: Cursor, s: ParserState, offset: number, flags: number, at: number): string {
  let block: string | null;
  if (flags & RAM_FLAG.CONTINUE) {
    block = s.lastBlock;
    if (block === null) throw malformed(`CONTINUE with no previous block at byte ${at}`);
  } else {
    block = c.shortString();
  }
  const used = s.blocks.get(block);
  if (used === undefined) throw malformed(`page in unknown RAMBlock ${JSON.stringify(block)} at byte ${at}`);
  if (offset + TARGET_PAGE_SIZE > used) throw malformed(`page at 0x${offset.toString(16)} beyond RAMBlock ${block}'s ${used} bytes (byte ${at})`);
  return block;
}

function parsePage(c: Cursor, s: ParserState, offset: number, flags: number, at: number): RamPageRecord {
  const block = blockOf(c, s, offset, flags, at);
  const data = c.bytes(TARGET_PAGE_SIZE);
  s.lastBlock = block;
  return { kind: 'ram-page', block, offset, continued: (flags & RAM_FLAG.CONTINUE) !== 0, data };
}

function parseZero(c: Cursor, s: ParserState, offset: number, flags: number, at: number): RamZeroRecord {
  const block = blockOf(c, s, offset, flags, at);
  const fill = c.u8();
  s.lastBlock = block;
  return { kind: 'ram-zero', block, offset, continued: (flags & RAM_FLAG.CONTINUE) !== 0, fill };
}

export function parseRamFooter(c: Cursor, s: ParserState): FooterRecord {
  const at = c.offset;
  const type = c.u8();
  const sectionId = c.be32();
  if (type !== SECTION.FOOTER || sectionId !== s.currentSection) {
    throw malformed(`expected the footer of section ${s.currentSection} at byte ${at}, found type 0x${type.toString(16)} id ${sectionId}`);
  }
  if (s.memSizeRemaining > 0) throw malformed(`ram setup ended with ${s.memSizeRemaining} bytes of MEM_SIZE undeclared`);
  s.phase = 'top';
  return { kind: 'footer', sectionId };
}
