/** Errors of the content index, with stable codes. */
export type CindexErrorCode =
  | 'CINDEX_NOT_FOUND' // no such index database
  | 'CINDEX_FOREIGN_FILE' // a file that is not a livemig content index
  | 'CINDEX_CONFIG' // a bad option (capacity, path)
  | 'CINDEX_BAD_REQUEST' // a query the server cannot answer
  | 'CINDEX_NO_EXPORT' // a query for an export without an index
  | 'CINDEX_CONNECT_FAILED'
  | 'CINDEX_CLOSED'
  | 'CINDEX_PROTOCOL'; // the peer broke the query protocol

export class CindexError extends Error {
  constructor(readonly code: CindexErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CindexError';
  }
}
