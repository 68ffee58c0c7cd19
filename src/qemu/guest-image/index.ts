/**
 * A real Linux test guest for QEMU, built on this machine and cached: Debian's cloud
 * kernel, a busybox initramfs, and an ext4 disk of real files. The cache directory
 * (LIVEMIG_GUEST_CACHE, else $XDG_CACHE_HOME/livemig/qemu-guest, else
 * ~/.cache/livemig/qemu-guest) holds versioned file names; a build reuses what is
 * there, and an exclusive lock on `.lock` makes concurrent builds (parallel test
 * files) wait for each other instead of racing.
 */
import { promises as fsp, existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { flock, isLockConflict } from '../../../nbd/server/flock.ts';
import { fetchKernel } from './kernel.ts';
import { buildInitramfs } from './initramfs.ts';
import { buildDisk } from './disk.ts';
import { GuestImageError } from './errors.ts';

export { GuestImageError } from './errors.ts';
export { READY_LINE } from './initramfs.ts';

/** Bump when the disk recipe changes, so old cached images are not reused. */
const DISK_RECIPE = 1;
const LOCK_WAIT_MS = 15 * 60_000;

export interface GuestImageOptions {
  dir?: string;
  diskBytes: number;
  log?: (line: string) => void;
}

export interface GuestImage {
  dir: string;
  kernel: string;
  kernelRelease: string;
  initrd: string;
  disk: string;
  diskBytes: number;
  files: number;
  dataBytes: number;
  /** Milliseconds the parts took in this call (near 0 when they came from the cache). */
  buildMs: { kernel: number; initrd: number; disk: number; total: number };
}

export function defaultGuestCache(): string {
  if (process.env.LIVEMIG_GUEST_CACHE) return process.env.LIVEMIG_GUEST_CACHE;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'livemig', 'qemu-guest');
}

/** The kernel command line for this guest; `loop` starts the file-reading loop. */
export function kernelCommandLine(opts: { loop?: boolean } = {}): string {
  return ['console=ttyS0', 'quiet', 'panic=-1', 'mitigations=off', ...(opts.loop ? ['livemig.loop=1'] : [])].join(' ');
}

export async function buildGuestImage(opts: GuestImageOptions): Promise<GuestImage> {
  if (opts.diskBytes % 4096 !== 0 || opts.diskBytes < 16 << 20) throw new GuestImageError('GUEST_IMAGE_DISK', `disk size must be a multiple of 4 KiB and at least 16 MiB, not ${opts.diskBytes}`);
  const dir = opts.dir ?? defaultGuestCache();
  const log = opts.log ?? (() => {});
  await fsp.mkdir(dir, { recursive: true });
  const unlock = await lockCache(dir);
  try {
    const t0 = performance.now();
    const kernel = await fetchKernel(dir);
    const t1 = performance.now();
    log(`kernel ${kernel.release}: ${Math.round(t1 - t0)} ms`);
    const initrd = await writeInitramfs(dir, await buildInitramfs(kernel));
    const t2 = performance.now();
    log(`initramfs ${initrd}: ${Math.round(t2 - t1)} ms`);
    const disk = await cachedDisk(dir, opts.diskBytes);
    const t3 = performance.now();
    log(`disk ${disk.path}: ${disk.files} files, ${disk.dataBytes} bytes of data, ${Math.round(t3 - t2)} ms`);
    return {
      dir, kernel: kernel.vmlinuz, kernelRelease: kernel.release, initrd, disk: disk.path, diskBytes: opts.diskBytes,
      files: disk.files, dataBytes: disk.dataBytes,
      buildMs: { kernel: t1 - t0, initrd: t2 - t1, disk: t3 - t2, total: t3 - t0 },
    };
  } finally {
    await unlock();
  }
}

/** Content-addressed: the same initramfs bytes always land at the same name. */
async function writeInitramfs(dir: string, bytes: Buffer): Promise<string> {
  const path = join(dir, `initramfs-${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}.cpio.gz`);
  if (!existsSync(path)) {
    await fsp.writeFile(`${path}.tmp`, bytes);
    await fsp.rename(`${path}.tmp`, path);
  }
  return path;
}

async function cachedDisk(dir: string, diskBytes: number): Promise<{ path: string; files: number; dataBytes: number }> {
  const path = join(dir, `disk-r${DISK_RECIPE}-${diskBytes}.img`);
  const manifest = `${path}.json`;
  if (existsSync(path) && existsSync(manifest)) return { path, ...JSON.parse(await fsp.readFile(manifest, 'utf8')) };
  const work = await fsp.mkdtemp(join(dir, 'disk-build-'));
  try {
    const built = await buildDisk(join(work, 'disk.img'), diskBytes, work);
    await fsp.rename(join(work, 'disk.img'), path);
    await fsp.writeFile(manifest, JSON.stringify(built)); // written last: its presence means "complete"
    return { path, ...built };
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

/** Takes the cache's exclusive lock, polling while another build holds it (flock here is non-blocking). */
async function lockCache(dir: string): Promise<() => Promise<void>> {
  const fh = await fsp.open(join(dir, '.lock'), 'a');
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      flock(fh.fd, 'exclusive');
      return () => fh.close(); // closing drops the lock
    } catch (err) {
      if (!isLockConflict(err)) throw (await fh.close(), err);
      if (Date.now() > deadline) throw (await fh.close(), new GuestImageError('GUEST_IMAGE_LOCKED', `another build held ${dir}/.lock for ${LOCK_WAIT_MS / 60_000} min`));
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
