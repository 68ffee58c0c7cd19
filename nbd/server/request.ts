/** One transmission request: its header decoded, and the checks that need no backend (doc/proto.md). */
import { REQUEST_MAGIC, CMD, CMD_FLAG, ERRNO, TF } from '../constants.ts';
import type { ExportBackend } from './export.ts';

export interface Request {
  type: number;
  flags: number;
  /** The 64-bit handle as two halves, echoed in the reply. */
  handleHi: number;
  handleLo: number;
  offset: number;
  length: number;
  /** A write's payload (pooled). */
  data?: Buffer;
  /** Data bytes counted against the limits until released (0 for refused sizes and dataless commands). */
  bytes: number;
  released: boolean;
}

export class RequestError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/** Decodes a 28-byte request header, or returns null on a bad magic (the stream cannot be resynchronised). */
export function parseRequest(h: Buffer, maxRequest: number): Request | null {
  if (h.readUInt32BE(0) !== REQUEST_MAGIC) return null;
  const type = h.readUInt16BE(6);
  const length = h.readUInt32BE(24);
  const high = h.readUInt32BE(16);
  return {
    type,
    flags: h.readUInt16BE(4),
    handleHi: h.readUInt32BE(8),
    handleLo: h.readUInt32BE(12),
    // Offsets beyond 2^53 are past any export; clamp so the bounds check rejects them.
    offset: high >= 0x200000 ? Number.MAX_SAFE_INTEGER : high * 0x1_0000_0000 + h.readUInt32BE(20),
    length,
    // Oversized requests are refused without a buffer, so they count nothing.
    bytes: (type === CMD.READ || type === CMD.WRITE) && length <= maxRequest ? length : 0,
    released: false,
  };
}

const KNOWN: number[] = [CMD.READ, CMD.WRITE, CMD.FLUSH, CMD.TRIM, CMD.WRITE_ZEROES];

/** Which command flags each command may carry (anything else is EINVAL). */
function allowedFlags(type: number, tflags: number): number {
  const fua = tflags & TF.SEND_FUA ? CMD_FLAG.FUA : 0;
  return type === CMD.WRITE_ZEROES ? fua | CMD_FLAG.NO_HOLE : fua; // FUA is accepted (and ignored where meaningless) on every command
}

/** Throws RequestError with the spec's errno for a request the backend must not see. */
export function checkRequest(req: Request, tflags: number, backend: ExportBackend, maxRequest: number): void {
  if (!KNOWN.includes(req.type)) throw new RequestError(ERRNO.EINVAL, `unsupported command ${req.type}`);
  if (req.flags & ~allowedFlags(req.type, tflags)) {
    throw new RequestError(ERRNO.EINVAL, `command flags 0x${req.flags.toString(16)} not valid for command ${req.type}`);
  }
  const writes = req.type === CMD.WRITE || req.type === CMD.TRIM || req.type === CMD.WRITE_ZEROES;
  if (writes && backend.readOnly) throw new RequestError(ERRNO.EPERM, 'export is read-only');
  if (req.type === CMD.FLUSH) {
    if (req.offset !== 0 || req.length !== 0) throw new RequestError(ERRNO.EINVAL, 'flush must have zero offset and length');
    return;
  }
  // A READ or WRITE over the advertised maximum payload gets EINVAL (EOVERFLOW is for commands
  // without payload); TRIM and WRITE_ZEROES may exceed it and are served in chunks.
  if ((req.type === CMD.READ || req.type === CMD.WRITE) && req.length > maxRequest) {
    throw new RequestError(ERRNO.EINVAL, `request of ${req.length} bytes exceeds the maximum of ${maxRequest}`);
  }
  if (req.offset + req.length > backend.size) {
    const errno = req.type === CMD.WRITE || req.type === CMD.WRITE_ZEROES ? ERRNO.ENOSPC : ERRNO.EINVAL;
    throw new RequestError(errno, `request [${req.offset}, +${req.length}) goes past the end of the export (${backend.size} bytes)`);
  }
}
