/**
 * The guest's disk: an ext4 image (4 KiB blocks) made by `mke2fs -d` from a staging
 * directory of real files copied from this machine, no root or loop device needed.
 * The selection is deterministic: a sorted walk of FILE_ROOTS taking every regular
 * file that still fits, until the data fills about 85 % of the image. Fixed UUID,
 * hash seed and timestamps make the same files give the same layout (mke2fs still
 * copies each staged file's change time, so the images are not byte-identical).
 */
import { promises as fsp, constants as fsc, type Dirent } from 'node:fs';
import { join, dirname } from 'node:path';
import { runTool } from './exec.ts';
import { GuestImageError } from './errors.ts';

export const FILE_ROOTS = ['/usr/lib', '/usr/share', '/usr/libexec', '/usr/bin', '/usr/sbin'];
const BLOCK = 4096;
const FIXED_UUID = '6c6d6967-7465-7374-6775-657374646973';
const FIXED_TIME = new Date('2026-01-01T00:00:00Z');
/** Fractions of the image to fill with file data, tried in turn if mke2fs runs out of space. */
const FILL_FRACTIONS = [0.85, 0.75, 0.6];

export interface DiskBuild {
  files: number;
  dataBytes: number; // allocated bytes of the files (whole 4 KiB blocks)
}

export interface Selected {
  source: string;
  size: number;
}

/** Writes an ext4 image of `diskBytes` at `image`, filled from FILE_ROOTS. */
export async function buildDisk(image: string, diskBytes: number, work: string): Promise<DiskBuild> {
  let lastError: unknown;
  for (const fraction of FILL_FRACTIONS) {
    const selected = await selectFiles(FILE_ROOTS, Math.floor(diskBytes * fraction));
    if (selected.length === 0) throw new GuestImageError('GUEST_IMAGE_DISK', `no readable files under ${FILE_ROOTS.join(', ')}`);
    const stage = join(work, 'stage');
    await fsp.rm(stage, { recursive: true, force: true });
    const copied = await stageFiles(selected, stage);
    await fsp.rm(image, { force: true });
    try {
      await mke2fs(stage, image, diskBytes, copied.files + copied.dirs + 1024);
      return { files: copied.files, dataBytes: copied.bytes };
    } catch (err) {
      lastError = err; // most likely out of space: fewer files next time
    } finally {
      await fsp.rm(stage, { recursive: true, force: true });
    }
  }
  throw lastError;
}

const allocated = (size: number) => Math.ceil(size / BLOCK) * BLOCK;

/** A sorted depth-first walk; every regular non-empty file that still fits under `target` bytes. */
export async function selectFiles(roots: string[], target: number): Promise<Selected[]> {
  const out: Selected[] = [];
  let total = 0;
  const walk = async (dir: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    } catch {
      return; // unreadable directory: skip it
    }
    for (const e of entries) {
      if (target - total < BLOCK) return;
      const path = join(dir, e.name);
      if (e.isDirectory()) await walk(path);
      else if (e.isFile()) {
        const size = await fsp.stat(path).then((s) => s.size, () => 0);
        if (size > 0 && total + allocated(size) <= target) {
          out.push({ source: path, size });
          total += allocated(size);
        }
      }
    }
  };
  for (const root of roots) await walk(root);
  return out;
}

/** Copies the files under `stage` at their own paths, with fixed timestamps; unreadable files are left out. */
async function stageFiles(files: Selected[], stage: string): Promise<{ files: number; dirs: number; bytes: number }> {
  const dirs = new Set<string>();
  let count = 0;
  let bytes = 0;
  for (const f of files) {
    const to = join(stage, f.source);
    const parent = dirname(to);
    if (!dirs.has(parent)) await fsp.mkdir(parent, { recursive: true }), dirs.add(parent);
    try {
      await fsp.copyFile(f.source, to, fsc.COPYFILE_FICLONE);
    } catch {
      continue; // not readable by this user
    }
    await fsp.utimes(to, FIXED_TIME, FIXED_TIME);
    count++;
    bytes += allocated(f.size);
  }
  const allDirs = new Set<string>();
  for (const d of dirs) for (let p = d; p.length > stage.length; p = dirname(p)) allDirs.add(p);
  for (const d of allDirs) await fsp.utimes(d, FIXED_TIME, FIXED_TIME);
  return { files: count, dirs: allDirs.size, bytes };
}

async function mke2fs(stage: string, image: string, diskBytes: number, inodes: number): Promise<void> {
  const seconds = String(FIXED_TIME.getTime() / 1000);
  const env = { ...process.env, E2FSPROGS_FAKE_TIME: seconds, SOURCE_DATE_EPOCH: seconds };
  const args = ['-q', '-F', '-t', 'ext4', '-b', String(BLOCK), '-m', '0', '-N', String(inodes), '-U', FIXED_UUID,
    '-E', `hash_seed=${FIXED_UUID},root_owner=0:0`, '-d', stage, image, `${Math.floor(diskBytes / 1024)}k`];
  await runTool('mke2fs', args, { env, code: 'GUEST_IMAGE_DISK' });
}
