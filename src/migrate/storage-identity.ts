/**
 * Do both hosts see the same disk? The source states its disk's size and the keyed
 * hashes of blocks the key chooses; the destination reads the same blocks and lists
 * those that differ, with its own hashes. A guest writing its disk may change a
 * sampled block between the two reads, so the source reads those blocks again: the
 * storage matches if it now reads what the destination read. Used by the engine and
 * by the QEMU stream proxies.
 */
import type { BlockBackend } from '../storage/backend.ts';
import { PAGE_SIZE, pageHash, sampleBlocks, type StorageIdentity, type Welcome } from '../wire/index.ts';

type BlockHash = StorageIdentity['sample'][number];

/** What the destination found: whether references can be resolved here. */
export interface StorageCheck {
  match: boolean;
  /** Same size: references can be resolved here (each is still checked by its keyed hash). */
  sameSize: boolean;
  reason?: string;
  /** Another disk, not this one written in between: a destination refuses it (MIGRATE_STORAGE). */
  other: boolean;
  /** Sampled blocks that read differently here, with this host's hash. */
  differs: BlockHash[];
  /** Bytes read for the check. */
  bytes: number;
}

async function hashBlocks(disk: BlockBackend, key: Buffer, blocks: number[]): Promise<BlockHash[]> {
  const buf = Buffer.allocUnsafe(PAGE_SIZE);
  const out: BlockHash[] = [];
  for (const block of blocks) {
    await disk.readInto(buf, block * PAGE_SIZE);
    out.push({ block, hash: pageHash(key, buf).toString('hex') });
  }
  return out;
}

/** The source's side: size and keyed hashes of the sampled blocks. */
export async function sampleStorage(disk: BlockBackend, spec: string, key: Buffer): Promise<StorageIdentity> {
  const sample = await hashBlocks(disk, key, sampleBlocks(key, Math.floor(disk.size / PAGE_SIZE)));
  return { spec, description: disk.description, size: disk.size, sample };
}

/**
 * Sampled blocks that may differ on one disk: the source samples while its guest
 * writes, so a block or two can change in between. More than that is another disk.
 */
export const SAMPLES_MAY_DIFFER = 2;

/** The destination's side: every sampled block read and compared. */
export async function checkStorage(disk: BlockBackend, key: Buffer, theirs: StorageIdentity): Promise<StorageCheck> {
  const other = (reason: string): StorageCheck => ({ match: false, sameSize: disk.size === theirs.size, other: true, reason, differs: [], bytes: 0 });
  if (disk.size !== theirs.size) return other(`size differs: ${disk.size} here, ${theirs.size} at the source`);
  // The blocks the key chooses, all of them: a peer that has not read this disk cannot name their hashes.
  const expected = sampleBlocks(key, Math.floor(disk.size / PAGE_SIZE));
  if (theirs.sample.length !== expected.length || theirs.sample.some((x, i) => x.block !== expected[i])) return other('the sampled blocks are not the ones the key chooses');
  const mine = await hashBlocks(disk, key, theirs.sample.map((s) => s.block));
  const differs = mine.filter((m, i) => m.hash !== theirs.sample[i].hash);
  const bytes = mine.length * PAGE_SIZE;
  if (!differs.length) return { match: true, sameSize: true, other: false, differs, bytes };
  const reason = `${differs.length} of ${mine.length} sampled block(s) differ, first ${differs[0].block}`;
  return { match: false, sameSize: true, other: differs.length > SAMPLES_MAY_DIFFER, reason, differs, bytes };
}

/** WELCOME's storage fields for a check. */
export const welcomeStorage = (c: StorageCheck) => ({
  storageMatch: c.match,
  ...(c.reason ? { storageReason: c.reason } : {}),
  ...(c.differs.length ? { storageDiffers: c.differs } : {}),
});

/** The source's verdict: the destination's, corrected for blocks the guest wrote in between. */
export async function storageVerdict(disk: () => Promise<BlockBackend>, key: Buffer, w: Welcome): Promise<{ match: boolean; reason?: string }> {
  if (w.storageMatch || !w.storageDiffers?.length) return { match: w.storageMatch, reason: w.storageReason };
  const backend = await disk();
  try {
    const now = await hashBlocks(backend, key, w.storageDiffers.map((d) => d.block));
    const still = now.filter((x, i) => w.storageDiffers![i].hash !== x.hash);
    if (!still.length) return { match: true };
    return { match: false, reason: `${still.length} sampled block(s) differ, first ${still[0].block}` };
  } finally {
    await backend.close();
  }
}
