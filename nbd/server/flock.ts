/**
 * Non-blocking flock through fs-ext, loaded lazily and only on the main thread:
 * fs-ext is a NAN addon that is not safe in worker threads (loading it in a
 * worker after another worker that loaded it has exited aborts the process).
 * Code in workers opens files unlocked; its process's main thread holds the lock.
 */
import { createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';

type FsExt = { flockSync(fd: number, flags: 'exnb' | 'shnb' | 'un'): void };
let fsExt: FsExt | null = null;

export function flock(fd: number, mode: 'exclusive' | 'shared' | 'unlock'): void {
  if (!isMainThread) throw new Error('flock is only taken on the main thread (fs-ext is not worker-safe)');
  fsExt ??= createRequire(import.meta.url)('fs-ext') as FsExt;
  fsExt.flockSync(fd, mode === 'exclusive' ? 'exnb' : mode === 'shared' ? 'shnb' : 'un');
}

export const isLockConflict = (err: unknown) => {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EAGAIN' || code === 'EWOULDBLOCK';
};
