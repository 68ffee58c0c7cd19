/**
 * A block backend: where the guest's disk bytes live. Plugins in nbdkit's sense:
 * a file (local or NFS) or an NBD export; the interceptor is a filter over either
 * and implements this same interface. Arguments in one order at every layer, as
 * in nbd/'s ExportBackend: the memory side first, then the offset on the disk.
 */
export interface BlockBackend {
  readonly size: number;
  readonly readOnly: boolean;
  /** e.g. "file /nfs/vm1.img" or "nbd://host:10809/vm1" */
  readonly description: string;
  readInto(target: Uint8Array, offset: number): Promise<void>;
  write(data: Uint8Array, offset: number): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}
