/**
 * Do both proxies see the same disk? The source states its disk's size and the keyed
 * hashes of blocks the fresh key chooses; the destination reads the same blocks from
 * its own --disk and compares (as src/migrate/{source,destination}/handshake.ts do for
 * the engine). References are sent only if they match.
 */
import type { BlockBackend } from '../storage/backend.ts';
import { PAGE_SIZE, pageHash, sampleBlocks, type StorageIdentity } from '../wire/index.ts';

export async function sampleStorage(disk: BlockBackend, spec: string, key: Buffer): Promise<StorageIdentity> {
  const buf = Buffer.allocUnsafe(PAGE_SIZE);
  const sample: StorageIdentity['sample'] = [];
  for (const block of sampleBlocks(key, Math.floor(disk.size / PAGE_SIZE))) {
    await disk.readInto(buf, block * PAGE_SIZE);
    sample.push({ block, hash: pageHash(key, buf).toString('hex') });
  }
  return { spec, description: disk.description, size: disk.size, sample };
}

export interface StorageMatch {
  match: boolean;
  reason?: string;
}

export async function compareStorage(disk: BlockBackend, key: Buffer, theirs: StorageIdentity): Promise<StorageMatch> {
  if (disk.size !== theirs.size) return { match: false, reason: `size differs: ${disk.size} here, ${theirs.size} at the source` };
  const buf = Buffer.allocUnsafe(PAGE_SIZE);
  for (const s of theirs.sample) {
    if ((s.block + 1) * PAGE_SIZE > disk.size) return { match: false, reason: `sampled block ${s.block} is past the end of the disk` };
    await disk.readInto(buf, s.block * PAGE_SIZE);
    if (pageHash(key, buf).toString('hex') !== s.hash) return { match: false, reason: `block ${s.block} differs` };
  }
  return { match: true };
}
