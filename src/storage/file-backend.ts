/** A disk image file (local or on an NFS mount), locked with flock so two guests never write one image. */
import { FileExport, NbdError } from '../../nbd/index.ts';
import { LivemigError } from '../errors.ts';
import type { BlockBackend } from './backend.ts';

/** The NBD library's file errors, as the guest's disk errors they are here. */
function diskError(err: unknown, path: string): unknown {
  if (!(err instanceof NbdError)) return err;
  if (err.code === 'NBD_EXPORT_LOCKED') return new LivemigError('GUEST_DISK_LOCKED', `${path} is locked by another process (another guest or server uses it)`);
  if (err.code === 'NBD_EXPORT_CONFIG') return new LivemigError('GUEST_DISK_OPEN', err.message);
  return err;
}

export class FileBackend implements BlockBackend {
  private constructor(private readonly file: FileExport, readonly path: string) {}

  static async open(path: string, opts: { readOnly?: boolean; lock?: boolean } = {}): Promise<FileBackend> {
    const file = await FileExport.open(path, opts).catch((e: unknown) => {
      throw diskError(e, path);
    });
    return new FileBackend(file, path);
  }

  get size(): number { return this.file.size; }
  get readOnly(): boolean { return this.file.readOnly; }
  get description(): string { return `file ${this.path}`; }

  readInto(target: Uint8Array, offset: number): Promise<void> {
    return this.file.read(Buffer.from(target.buffer, target.byteOffset, target.byteLength), offset);
  }
  write(data: Uint8Array, offset: number): Promise<void> {
    return this.file.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength), offset);
  }
  flush(): Promise<void> { return this.file.flush(); }
  close(): Promise<void> { return this.file.close(); }
}
