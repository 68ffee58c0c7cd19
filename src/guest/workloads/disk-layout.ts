/**
 * How a workload sees its disk: a file area of contiguous files (sizes drawn
 * log-uniformly between 4 KiB and 2 MiB, like a file server's mix) and, for
 * workloads that write, a write area at the end. Derived from the seed and the
 * disk size alone, so it is never part of the saved state.
 */
import { Rng } from '../../util/rng.ts';

export interface DiskFile {
  first: number;
  blocks: number;
}

export interface DiskLayout {
  files: DiskFile[];
  writeFirst: number; // first block of the write area
  writeBlocks: number;
}

export function diskLayout(seed: number, diskBlocks: number, writeShare: number): DiskLayout {
  const rng = new Rng(seed ^ 0x5f3759df);
  const writeBlocks = Math.floor(diskBlocks * writeShare);
  const fileArea = diskBlocks - writeBlocks;
  const files: DiskFile[] = [];
  for (let b = 0; b < fileArea; ) {
    const size = Math.max(1, Math.round(Math.exp(rng.float() * Math.log(512)))); // 1..512 blocks
    const blocks = Math.min(size, fileArea - b);
    files.push({ first: b, blocks });
    b += blocks;
  }
  // Popularity must not follow disk order, or the hot set would be one contiguous run.
  for (let i = files.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [files[i], files[j]] = [files[j], files[i]];
  }
  return { files, writeFirst: fileArea, writeBlocks };
}
