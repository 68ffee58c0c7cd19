/**
 * Errors with a stable `code` a caller can switch on (undici-style).
 * NbdRequestError carries the protocol errno the server replied with.
 */
import { errnoName } from './constants.ts';

export type NbdErrorCode =
  | 'NBD_BAD_URI'
  | 'NBD_CONNECT_FAILED'
  | 'NBD_PROTOCOL' // the peer broke the protocol: bad magic, impossible lengths
  | 'NBD_HANDSHAKE' // negotiation refused or failed
  | 'NBD_NO_EXPORT'
  | 'NBD_REQUEST' // the server answered a request with an error
  | 'NBD_CLOSED' // the connection ended with requests pending
  | 'NBD_INVALID_ARGUMENT'
  | 'NBD_EXPORT_LOCKED'
  | 'NBD_EXPORT_CONFIG'
  | 'NBD_TLS' // TLS refused, required, or its handshake failed
  | 'NBD_TLS_CONFIG' // credentials missing or malformed
  | 'NBD_LEASE_HELD'; // another client holds the export's lease

export class NbdError extends Error {
  readonly code: NbdErrorCode;
  constructor(code: NbdErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NbdError';
    this.code = code;
  }
}

export class NbdRequestError extends NbdError {
  readonly errno: number;
  constructor(command: string, errno: number, detail?: string) {
    super('NBD_REQUEST', `${command} failed: ${errnoName(errno)}${detail ? ` (${detail})` : ''}`);
    this.name = 'NbdRequestError';
    this.errno = errno;
  }
}
