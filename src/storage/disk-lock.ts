/**
 * The guest's claim on a disk image file, held by its process's main thread (the
 * worker doing the I/O opens the file unlocked: fs-ext cannot load in workers).
 * Two guests never write one image: the second one's lock fails at once. NBD
 * disks need no lock here: the NBD server holds the file.
 */
import { promises as fsp } from 'node:fs';
import { isNbdUri, flock, isLockConflict } from '../../nbd/index.ts';
import { LivemigError } from '../errors.ts';

export class DiskLock {
  private constructor(private readonly fh: fsp.FileHandle, readonly path: string) {}

  /** Locks a file disk exclusively; null for an NBD URI. */
  static async take(spec: string): Promise<DiskLock | null> {
    if (isNbdUri(spec)) return null;
    const fh = await fsp.open(spec, 'r').catch((e: NodeJS.ErrnoException) => {
      throw new LivemigError('GUEST_DISK_OPEN', `cannot open ${spec}: ${e.code ?? e.message}`);
    });
    try {
      flock(fh.fd, 'exclusive');
    } catch (err) {
      await fh.close();
      if (isLockConflict(err)) throw new LivemigError('GUEST_DISK_LOCKED', `${spec} is locked by another process (another guest or server uses it)`);
      throw err;
    }
    return new DiskLock(fh, spec);
  }

  async release(): Promise<void> {
    await this.fh.close(); // closing the descriptor drops its flock
  }
}
