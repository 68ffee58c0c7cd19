/**
 * The typed records a QEMU migration stream parses into. Each holds every field its
 * bytes encode, so writing the records back gives the input byte for byte. Buffers
 * are views into the chunks the parser was fed (a copy only where a record straddled
 * two chunks): valid as long as the caller leaves those chunks unchanged.
 *
 * Stream shape (QEMU 7.2 precopy): header, configuration, then sections; the `ram`
 * section's START/PART/END bodies are RAM records ending in EOS, each section closed
 * by a footer. The first FULL section starts the device state, which is carried as
 * opaque bytes to the end (EOF and the VMDESCRIPTION JSON included); `end` reports
 * where EOF was found, without bytes of its own.
 */

export interface HeaderRecord {
  kind: 'header';
  version: number;
}

export interface ConfigurationSubsection {
  name: string;
  version: number;
  body: Buffer;
}

export interface ConfigurationRecord {
  kind: 'configuration';
  machine: string; // e.g. pc-i440fx-7.2
  subsections: ConfigurationSubsection[];
}

export type SectionType = 'start' | 'part' | 'end' | 'full';

/** A section header; START and FULL carry the id string, instance and version, PART and END only the id. */
export interface SectionRecord {
  kind: 'section';
  type: SectionType;
  sectionId: number;
  idstr: string; // for PART and END: looked up from START, not on the wire
  instanceId: number; // 0 and not on the wire for PART and END
  versionId: number; // 0 and not on the wire for PART and END
}

export interface FooterRecord {
  kind: 'footer';
  sectionId: number;
}

export interface CommandRecord {
  kind: 'command';
  command: number;
  name: string;
  data: Buffer;
}

/** RAM setup: the total of the blocks' used lengths; one `ram-block` record per block follows. */
export interface RamMemSizeRecord {
  kind: 'ram-mem-size';
  totalBytes: number;
}

export interface RamBlockRecord {
  kind: 'ram-block';
  block: string;
  usedLength: number;
}

/** Common to ZERO and PAGE: `continued` means the block name was left out (same block as before). */
interface RamPageHeader {
  block: string;
  offset: number; // byte offset in the block, page aligned
  continued: boolean;
}

export interface RamZeroRecord extends RamPageHeader {
  kind: 'ram-zero';
  fill: number; // the byte the page is filled with (QEMU writes 0)
}

export interface RamPageRecord extends RamPageHeader {
  kind: 'ram-page';
  data: Buffer; // 4096 bytes
}

export interface RamEosRecord {
  kind: 'ram-eos';
}

/** Bytes after the first FULL section: device state, EOF, VMDESCRIPTION, passed through unparsed. */
export interface DeviceStateRecord {
  kind: 'device-state';
  data: Buffer;
}

/** Emitted by end(): where QEMU_VM_EOF was (absolute stream offset) and the VMDESCRIPTION JSON text. */
export interface EndRecord {
  kind: 'end';
  eofOffset: number;
  vmdescription: string;
}

export type QemuRecord =
  | HeaderRecord
  | ConfigurationRecord
  | SectionRecord
  | FooterRecord
  | CommandRecord
  | RamMemSizeRecord
  | RamBlockRecord
  | RamZeroRecord
  | RamPageRecord
  | RamEosRecord
  | DeviceStateRecord
  | EndRecord;
