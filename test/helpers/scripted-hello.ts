/** A valid HELLO for scripted sources: a 64 KiB guest on a disk image, sampled as a source samples it. */
import { openSync, readSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { CAPABILITIES, PAGE_SIZE, PROTOCOL_VERSION, pageHash, sampleBlocks, type Hello } from '../../src/wire/index.ts';

export function scriptedHello(image: string, diskBytes: number, spec: string): Hello {
  const key = randomBytes(32);
  const block = Buffer.alloc(PAGE_SIZE);
  const fd = openSync(image, 'r');
  const sample = sampleBlocks(key, diskBytes / PAGE_SIZE).map((b) => (readSync(fd, block, 0, PAGE_SIZE, b * PAGE_SIZE), { block: b, hash: pageHash(key, block).toString('hex') }));
  closeSync(fd);
  return {
    protocol: 'livemig', versionMin: PROTOCOL_VERSION, versionMax: PROTOCOL_VERSION, capabilities: [...CAPABILITIES], key: key.toString('hex'), strategy: 'p2b',
    guest: { name: 'scripted', workload: 'idle', options: { seed: 1 }, memoryBytes: 16 * PAGE_SIZE, pageSize: PAGE_SIZE, regions: [{ firstPage: 0, pages: 16 }] },
    storage: { spec, description: 'scripted', size: diskBytes, sample },
  };
}
