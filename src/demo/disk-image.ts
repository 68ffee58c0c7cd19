/** Disk images for local runs: random content, so every block is distinct, as a real guest's data looks to the p2b map. */
import { openSync, writeSync, closeSync, fsyncSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';

export const diskBytesFor = (memoryBytes: number) => Math.max(256 << 20, memoryBytes * 2);

export function makeDiskImage(path: string, bytes: number): string {
  const fd = openSync(path, 'w');
  const chunk = Buffer.allocUnsafe(16 << 20);
  for (let done = 0; done < bytes; done += chunk.length) writeSync(fd, randomFillSync(chunk.subarray(0, Math.min(chunk.length, bytes - done))));
  fsyncSync(fd); // else the guest's first flush (at pause, in downtime) pays for writing the whole image back
  closeSync(fd);
  return path;
}
