/**
 * An export backed by a regular file or block device. A flock (fs-ext) keeps two
 * servers from exporting the same file read-write: exclusive for read-write,
 * shared for read-only, both non-blocking so a conflict is an immediate error.
 */
import fs, { promises as fsp, constants as fsc } from 'node:fs';
import { flock, isLockConflict } from './flock.ts';
import { NbdError } from '../errors.ts';
import type { ExportBackend } from './export.ts';

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

// The callback API costs the event loop less per call than FileHandle.read/write
// (measured while profiling `npm run bench -- nbd`), and this is the hot path.
const pread = (fd: number, buf: Buffer, at: number, n: number, pos: number) =>
  new Promise<number>((resolve, reject) => fs.read(fd, buf, at, n, pos, (err, bytes) => (err ? reject(err) : resolve(bytes))));
const pwrite = (fd: number, buf: Buffer, at: number, n: number, pos: number) =>
  new Promise<number>((resolve, reject) => fs.write(fd, buf, at, n, pos, (err, bytes) => (err ? reject(err) : resolve(bytes))));

export interface FileExportOptions {
  readOnly?: boolean;
  lock?: boolean;
}

export class FileExport implements ExportBackend {
  readonly description: string;
  private constructor(
    private readonly fh: fsp.FileHandle,
    readonly size: number,
    readonly readOnly: boolean,
    readonly path: string,
  ) {
    this.description = `file ${path}`;
  }

  /**
   * `lock: false` is for readers beside a running owner (inspection tools) and for
   * guest workers, whose process's main thread holds the lock (see flock.ts).
   */
  static async open(path: string, opts: FileExportOptions = {}): Promise<FileExport> {
    const readOnly = opts.readOnly ?? false;
    const lock = opts.lock ?? true;
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path, readOnly ? fsc.O_RDONLY : fsc.O_RDWR);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new NbdError('NBD_EXPORT_CONFIG', `cannot open ${path}: ${e.code ?? e.message}`, { cause: err });
    }
    try {
      if (lock) flock(fh.fd, readOnly ? 'shared' : 'exclusive');
    } catch (err) {
      await fh.close();
      const e = err as NodeJS.ErrnoException;
      if (isLockConflict(e)) {
        throw new NbdError('NBD_EXPORT_LOCKED', `${path} is locked by another process (already exported${readOnly ? ' read-write' : ''})`);
      }
      throw new NbdError('NBD_EXPORT_CONFIG', `cannot lock ${path}: ${e.code ?? e.message}`, { cause: err });
    }
    const st = await fh.stat();
    if (!st.isFile() && !st.isBlockDevice()) {
      await fh.close();
      throw new NbdError('NBD_EXPORT_CONFIG', `${path} is not a regular file or block device`);
    }
    return new FileExport(fh, st.size, readOnly, path);
  }

  async read(target: Buffer, offset: number): Promise<void> {
    let done = 0;
    while (done < target.length) {
      const bytesRead = await pread(this.fh.fd, target, done, target.length - done, offset + done);
      if (bytesRead === 0) {
        target.fill(0, done); // a file shrunk behind our back reads as zeroes, never garbage
        return;
      }
      done += bytesRead;
    }
  }

  async write(data: Buffer, offset: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const bytesWritten = await pwrite(this.fh.fd, data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  readSync(target: Buffer, offset: number): void {
    let done = 0;
    while (done < target.length) {
      const n = fs.readSync(this.fh.fd, target, done, target.length - done, offset + done);
      if (n === 0) return void target.fill(0, done);
      done += n;
    }
  }

  writeSync(data: Buffer, offset: number): void {
    for (let done = 0; done < data.length; ) done += fs.writeSync(this.fh.fd, data, done, data.length - done, offset + done);
  }

  async flush(): Promise<void> {
    await this.fh.datasync();
  }

  async trim(offset: number, length: number): Promise<void> {
    // No portable hole punching from Node; zeroing keeps "reads return zeroes" true.
    await this.writeZeroes(offset, length);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length; done += ZERO_CHUNK.length) {
      const n = Math.min(ZERO_CHUNK.length, length - done);
      await this.write(ZERO_CHUNK.subarray(0, n), offset + done);
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
