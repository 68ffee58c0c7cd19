/**
 * How much of a guest's memory a block reference could carry: each 4 KiB page of a
 * memory image (pmemsave) classified as zero, equal byte for byte to some 4 KiB-aligned
 * block of the disk image (looked up by SHA-1 in a map of the image's blocks, then
 * compared), or other. This is the ceiling for a content index fed by the disk.
 */
import { createHash } from 'node:crypto';
import { promises as fsp, openSync, readSync, closeSync } from 'node:fs';

const PAGE = 4096;
const CHUNK = 64 << 20;

export interface ContentMix {
  pages: number;
  zero: number;
  onDisk: number; // non-zero pages equal to a disk block
  other: number;
  distinctOnDisk: number; // distinct disk blocks those pages equal
}

const isZero = (b: Buffer) => b.every((x) => x === 0); // Buffer.every is fast enough for a report run
const key = (b: Buffer) => createHash('sha1').update(b).digest('base64');

/** SHA-1 of every non-zero block of the image -> its first block number. */
export async function indexDisk(image: string): Promise<Map<string, number>> {
  const index = new Map<string, number>();
  await forEachPage(image, (page, n) => {
    if (!isZero(page)) {
      const k = key(page);
      if (!index.has(k)) index.set(k, n);
    }
  });
  return index;
}

export async function classifyMemory(memory: string, image: string, index: Map<string, number>): Promise<ContentMix> {
  const disk = openSync(image, 'r');
  const block = Buffer.alloc(PAGE);
  const mix: ContentMix = { pages: 0, zero: 0, onDisk: 0, other: 0, distinctOnDisk: 0 };
  const used = new Set<number>();
  try {
    await forEachPage(memory, (page) => {
      mix.pages++;
      if (isZero(page)) return void mix.zero++;
      const n = index.get(key(page));
      if (n !== undefined) readSync(disk, block, 0, PAGE, n * PAGE);
      if (n !== undefined && block.equals(page)) (mix.onDisk++, used.add(n));
      else mix.other++; // not on disk (or, never seen, a SHA-1 collision)
    });
  } finally {
    closeSync(disk);
  }
  mix.distinctOnDisk = used.size;
  return mix;
}

async function forEachPage(path: string, fn: (page: Buffer, n: number) => void): Promise<void> {
  const fh = await fsp.open(path);
  const buf = Buffer.alloc(CHUNK);
  try {
    for (let pos = 0, n = 0; ; pos += CHUNK) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
      for (let o = 0; o + PAGE <= bytesRead; o += PAGE) fn(buf.subarray(o, o + PAGE), n++);
      if (bytesRead < CHUNK) return;
    }
  } finally {
    await fh.close();
  }
}
