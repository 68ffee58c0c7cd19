/**
 * Top-level records of a QEMU stream: the header, the configuration, section headers
 * and footers, and commands. What livemig cannot carry is refused here, each with the
 * capability that produces it: a multifd channel or TLS instead of the header, an
 * iterable section other than `ram`, the postcopy and COLO commands, a return path.
 */
import type { Cursor } from './cursor.ts';
import { QemuStreamError, type QemuCapability } from './errors.ts';
import { MIG_CMD, MIG_CMD_NAMES, MULTIFD_MAGIC, QEMU_VM_FILE_MAGIC, QEMU_VM_FILE_VERSION, SECTION, TARGET_PAGE_BITS } from './constants.ts';
import type { CommandRecord, ConfigurationRecord, ConfigurationSubsection, HeaderRecord, QemuRecord, SectionRecord } from './records.ts';
import type { ParserState } from './state.ts';

const MAX_MACHINE_NAME = 256;
const MAX_CAPABILITIES = 64;

const unsupported = (message: string, capability?: QemuCapability) => new QemuStreamError('QEMU_STREAM_UNSUPPORTED', message, capability);
const malformed = (message: string) => new QemuStreamError('QEMU_STREAM_MALFORMED', message);

export function parseHeader(c: Cursor, s: ParserState): HeaderRecord {
  c.need(4);
  const magic = c.buf.readUInt32BE(c.pos);
  if (magic === MULTIFD_MAGIC) throw new QemuStreamError('QEMU_STREAM_NOT_QEMU', 'this is a multifd channel, not a main migration stream: multifd is not supported (turn the multifd capability off)', 'multifd');
  if (c.buf[c.pos] === 0x16 && c.buf[c.pos + 1] === 0x03 && c.buf[c.pos + 2] <= 0x04) throw new QemuStreamError('QEMU_STREAM_NOT_QEMU', 'this is a TLS handshake, not a QEMU migration stream: TLS migration is not supported (drop tls-creds; livemig protects its own link)', 'tls');
  if (magic !== QEMU_VM_FILE_MAGIC) throw new QemuStreamError('QEMU_STREAM_NOT_QEMU', `not a QEMU migration stream: it starts with ${c.buf.subarray(c.pos, c.pos + 4).toString('hex')}, not "QEVM"`);
  c.pos += 4;
  const version = c.be32();
  if (version !== QEMU_VM_FILE_VERSION) throw unsupported(`QEMU migration stream version ${version} is not supported (only version ${QEMU_VM_FILE_VERSION})`);
  s.phase = 'top';
  return { kind: 'header', version };
}

/** One record between sections; sets the phase for what follows it. */
export function parseTopLevel(c: Cursor, s: ParserState): QemuRecord | null {
  const type = c.peek();
  if (s.returnPathOpened && type !== SECTION.COMMAND) throw unsupported('the stream opens a return path (return-path capability): not supported (turn return-path off)', 'return-path');
  switch (type) {
    case SECTION.CONFIGURATION:
      if (s.records !== 1) throw malformed(`configuration at byte ${c.offset}: only valid right after the header`);
      return parseConfiguration(c);
    case SECTION.START:
    case SECTION.FULL:
      return parseSectionStart(c, s);
    case SECTION.PART:
    case SECTION.END:
      return parseSectionPart(c, s);
    case SECTION.COMMAND:
      return parseCommand(c, s);
    case SECTION.EOF:
      s.phase = 'device'; // no FULL sections at all: EOF and VMDESCRIPTION pass through like device state
      return null;
    case SECTION.VMDESCRIPTION:
    case SECTION.SUBSECTION:
    case SECTION.FOOTER:
      throw malformed(`section type 0x${type.toString(16)} at byte ${c.offset} is out of place`);
    default:
      throw unsupported(`unknown section type 0x${type.toString(16)} at byte ${c.offset} (a newer QEMU, or not a QEMU stream)`);
  }
}

function parseConfiguration(c: Cursor): ConfigurationRecord {
  c.u8();
  const len = c.be32();
  if (len > MAX_MACHINE_NAME) throw malformed(`configuration: machine name of ${len} bytes`);
  const machine = c.bytes(len).toString('latin1');
  const subsections: ConfigurationSubsection[] = [];
  while (c.peek() === SECTION.SUBSECTION) {
    c.u8();
    const name = c.shortString();
    const version = c.be32();
    const start = c.pos;
    parseConfigurationSubsection(c, name);
    subsections.push({ name, version, body: c.buf.subarray(start, c.pos) });
  }
  return { kind: 'configuration', machine, subsections };
}

function parseConfigurationSubsection(c: Cursor, name: string): void {
  if (name === 'configuration/target-page-bits') {
    const bits = c.be32();
    if (bits !== TARGET_PAGE_BITS) throw unsupported(`target page size 2^${bits}: only 4 KiB pages are supported`);
  } else if (name === 'configuration/capabilities') {
    const count = c.be32();
    if (count > MAX_CAPABILITIES) throw malformed(`configuration: ${count} capabilities`);
    const caps: string[] = [];
    for (let i = 0; i < count; i++) caps.push(c.shortString());
    if (caps.length) throw unsupported(`capabilities ${caps.join(', ')} change the RAM records: not supported`, caps.includes('x-ignore-shared') ? 'x-ignore-shared' : undefined);
  } else if (name === 'configuration/uuid') {
    c.bytes(16);
  } else {
    throw unsupported(`unknown configuration subsection ${JSON.stringify(name)}`);
  }
}

const ITERABLE_CAPABILITY: Record<string, QemuCapability> = { block: 'block', 'dirty-bitmap': 'dirty-bitmaps' };

function parseSectionStart(c: Cursor, s: ParserState): SectionRecord {
  const type = c.u8() === SECTION.START ? 'start' : 'full';
  const sectionId = c.be32();
  const idstr = c.shortString();
  const instanceId = c.be32();
  const versionId = c.be32();
  if (type === 'full') {
    s.phase = 'device';
  } else {
    if (idstr !== 'ram') throw unsupported(`iterable section ${JSON.stringify(idstr)}: only RAM is supported as live state`, ITERABLE_CAPABILITY[idstr]);
    if (s.ramSectionId !== null) throw malformed(`a second ram section START at byte ${c.offset}`);
    s.ramSectionId = sectionId;
    enterRam(s, sectionId, 'start');
  }
  return { kind: 'section', type, sectionId, idstr, instanceId, versionId };
}

function parseSectionPart(c: Cursor, s: ParserState): SectionRecord {
  const type = c.u8() === SECTION.PART ? 'part' : 'end';
  const sectionId = c.be32();
  if (sectionId !== s.ramSectionId) throw malformed(`section ${type.toUpperCase()} for unknown section id ${sectionId} at byte ${c.offset}`);
  enterRam(s, sectionId, type);
  return { kind: 'section', type, sectionId, idstr: 'ram', instanceId: 0, versionId: 0 };
}

function enterRam(s: ParserState, sectionId: number, type: 'start' | 'part' | 'end'): void {
  s.phase = 'ram';
  s.currentSection = sectionId;
  s.currentSectionType = type;
}

const COMMAND_CAPABILITY: Record<number, QemuCapability> = {
  [MIG_CMD.POSTCOPY_ADVISE]: 'postcopy-ram',
  [MIG_CMD.POSTCOPY_LISTEN]: 'postcopy-ram',
  [MIG_CMD.POSTCOPY_RUN]: 'postcopy-ram',
  [MIG_CMD.POSTCOPY_RAM_DISCARD]: 'postcopy-ram',
  [MIG_CMD.PACKAGED]: 'postcopy-ram',
  [MIG_CMD.POSTCOPY_RESUME]: 'postcopy-ram',
  [MIG_CMD.RECV_BITMAP]: 'postcopy-ram',
  [MIG_CMD.ENABLE_COLO]: 'x-colo',
};

/** OPEN_RETURN_PATH and PING pass (the refusal waits for the next section, which tells postcopy from return-path). */
function parseCommand(c: Cursor, s: ParserState): CommandRecord {
  c.u8();
  const command = c.be16();
  const len = c.be16();
  const name = MIG_CMD_NAMES[command] ?? `command ${command}`;
  const capability = COMMAND_CAPABILITY[command];
  if (capability === 'postcopy-ram') throw unsupported(`${name}: postcopy (postcopy-ram capability) is not supported`, capability);
  if (capability) throw unsupported(`${name}: COLO (x-colo capability) is not supported`, capability);
  const known = (command === MIG_CMD.OPEN_RETURN_PATH && len === 0) || (command === MIG_CMD.PING && len === 4);
  if (!known) throw unsupported(`QEMU_VM_COMMAND ${name} with ${len} bytes at byte ${c.offset} is not supported`);
  const data = c.bytes(len);
  if (command === MIG_CMD.OPEN_RETURN_PATH) s.returnPathOpened = true;
  return { kind: 'command', command, name, data };
}
