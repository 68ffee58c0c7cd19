/** Why a QEMU migration stream was refused; `capability` names the QEMU migration capability at fault. */
import { LivemigError } from '../../errors.ts';

export type QemuStreamErrorCode =
  | 'QEMU_STREAM_NOT_QEMU' // does not start like a QEMU stream (garbage, TLS, a multifd channel)
  | 'QEMU_STREAM_UNSUPPORTED' // a QEMU stream using something livemig cannot carry
  | 'QEMU_STREAM_MALFORMED' // breaks the format (bad footer, lengths out of bounds, unknown block)
  | 'QEMU_STREAM_TRUNCATED'; // ended before the stream was complete

export type QemuCapability = 'xbzrle' | 'compress' | 'multifd' | 'postcopy-ram' | 'return-path' | 'tls' | 'rdma' | 'x-colo' | 'x-ignore-shared' | 'block' | 'dirty-bitmaps';

export class QemuStreamError extends LivemigError {
  constructor(
    code: QemuStreamErrorCode,
    message: string,
    readonly capability?: QemuCapability,
  ) {
    super(code, message);
    this.name = 'QemuStreamError';
  }
}
