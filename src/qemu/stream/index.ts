/** QEMU's migration stream (format version 3, QEMU 7.2): an incremental parser and a writer that round-trip it byte for byte. */
export { QemuStreamParser, parseQemuStream, MAX_RECORD, type Emit } from './parser.ts';
export { QemuStreamWriter } from './writer.ts';
export { QemuStreamError, type QemuStreamErrorCode, type QemuCapability } from './errors.ts';
export type * from './records.ts';
export * as constants from './constants.ts';
