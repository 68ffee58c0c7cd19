/**
 * Every number of QEMU's migration stream (format version 3, as QEMU 7.2 writes it)
 * that this folder knows, in one place: migration/savevm.c (sections, commands),
 * migration/ram.c (RAM record flags), migration/multifd.c (channel magic).
 */

export const QEMU_VM_FILE_MAGIC = 0x5145564d; // "QEVM"
export const QEMU_VM_FILE_VERSION = 3;
export const QEMU_VM_FILE_VERSION_COMPAT = 2;

/** Top-level record types (the byte before each section). */
export const SECTION = {
  EOF: 0x00,
  START: 0x01,
  PART: 0x02,
  END: 0x03,
  FULL: 0x04,
  SUBSECTION: 0x05,
  VMDESCRIPTION: 0x06,
  CONFIGURATION: 0x07,
  COMMAND: 0x08,
  FOOTER: 0x7e,
} as const;

/** Flags in the low bits of each RAM record's 64-bit address (the page offset is page aligned). */
export const RAM_FLAG = {
  FULL: 0x01, // obsolete since QEMU 1.x
  ZERO: 0x02, // a page filled with one byte (always 0 in practice)
  MEM_SIZE: 0x04, // the RAMBlock list, at setup
  PAGE: 0x08, // a whole page follows
  EOS: 0x10, // end of this section's RAM records
  CONTINUE: 0x20, // same RAMBlock as the previous record: no name follows
  XBZRLE: 0x40, // xbzrle capability: a delta against the source's cache
  HOOK: 0x80, // RDMA registration hook
  COMPRESS_PAGE: 0x100, // compress capability: a zlib-compressed page
  MULTIFD_FLUSH: 0x200, // multifd sync point (QEMU 8.1 and later)
} as const;

/** QEMU_VM_COMMAND numbers (enum qemu_vm_cmd). */
export const MIG_CMD = {
  INVALID: 0,
  OPEN_RETURN_PATH: 1,
  PING: 2,
  POSTCOPY_ADVISE: 3,
  POSTCOPY_LISTEN: 4,
  POSTCOPY_RUN: 5,
  POSTCOPY_RAM_DISCARD: 6,
  PACKAGED: 7,
  ENABLE_COLO: 8,
  POSTCOPY_RESUME: 9,
  RECV_BITMAP: 10,
} as const;

export const MIG_CMD_NAMES: Record<number, string> = Object.fromEntries(Object.entries(MIG_CMD).map(([k, v]) => [v, k]));

/** The first four bytes of every multifd channel (the main channel starts with QEVM). */
export const MULTIFD_MAGIC = 0x11223344;

/** x86's TARGET_PAGE_SIZE: RAM offsets carry flags in the bits below it. */
export const TARGET_PAGE_BITS = 12;
export const TARGET_PAGE_SIZE = 1 << TARGET_PAGE_BITS;
