/** Errors of the p2b layer, with stable codes. */
export type P2bErrorCode = 'P2B_NOT_FOUND' | 'P2B_FOREIGN_FILE' | 'P2B_SCHEMA_VERSION' | 'P2B_MISMATCH';

export class P2bError extends Error {
  constructor(readonly code: P2bErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'P2bError';
  }
}
