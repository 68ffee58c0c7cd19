/**
 * What the server needs from the bytes behind an export: the server core knows
 * nothing of where they come from (nbdkit's plugin split).
 */
export interface ExportBackend {
  readonly size: number;
  /** Human-readable origin, shown in NBD_OPT_LIST descriptions. */
  readonly description: string;
  readonly readOnly: boolean;
  read(target: Buffer, offset: number): Promise<void>;
  write(data: Buffer, offset: number): Promise<void>;
  /**
   * Optional synchronous variants, on the calling thread. The server uses them
   * for small requests while they stay quick (see inline-io.ts), and read()/write()
   * otherwise.
   */
  readSync?(target: Buffer, offset: number): void;
  writeSync?(data: Buffer, offset: number): void;
  flush(): Promise<void>;
  /** Discard a range; reads of it return zeroes afterwards in both of our backends. */
  trim(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number): Promise<void>;
  close(): Promise<void>;
}

export interface ExportSpec {
  name: string;
  backend: ExportBackend;
}
