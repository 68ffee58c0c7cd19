/** Disk images with random content, as a guest's data looks to the p2b map (every block distinct). */
import { openSync, writeSync, closeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';

export function randomImage(path: string, bytes: number): string {
  const fd = openSync(path, 'w');
  const chunk = Buffer.allocUnsafe(8 << 20);
  for (let done = 0; done < bytes; done += chunk.length) writeSync(fd, randomFillSync(chunk.subarray(0, Math.min(chunk.length, bytes - done))));
  closeSync(fd);
  return path;
}
