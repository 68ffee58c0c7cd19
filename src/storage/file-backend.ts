/** A disk image file (local or on an NFS mount), locked with flock so two guests never write one image. */
import { FileExport } from '../../nbd/index.ts';
import type { BlockBackend } from './backend.ts';

export class FileBackend implements BlockBackend {
  private constructor(private readonly file: FileExport, readonly path: string) {}

  static async open(path: string, opts: { readOnly?: boolean; lock?: boolean } = {}): Promise<FileBackend> {
    return new FileBackend(await FileExport.open(path, opts), path);
  }

  get size(): number { return this.file.size; }
  get readOnly(): boolean { return this.file.readOnly; }
  get description(): string { return `file ${this.path}`; }

  readInto(target: Uint8Array, offset: number): Promise<void> {
    return this.file.read(Buffer.from(target.buffer, target.byteOffset, target.byteLength), offset);
  }
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.file.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength), offset);
  }
  flush(): Promise<void> { return this.file.flush(); }
  close(): Promise<void> { return this.file.close(); }
}
