/**
 * The heap options of `dirty`: --heap compressible fills and rewrites heap pages
 * with content that compresses, --write-size rewrites only that many bytes of a
 * dirtied page; both stay deterministic, so a replay from the seed (the
 * nothing-lost check) gives the same memory.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { Guest } from '../../src/guest/guest.ts';
import { compareFingerprints } from '../../src/guest/fingerprint.ts';
import { LivemigError } from '../../src/errors.ts';
import { lz4Compress, PAGE_SIZE } from '../../src/wire/index.ts';
import { tempDir } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
after(() => dir.cleanup());
const options = { seed: 7, dirtyRate: 16 * MiB, heap: 'compressible' as const, writeSize: 256 };

let n = 0;
async function pausedGuest(opts: Record<string, unknown> = options): Promise<Guest> {
  const disk = join(dir.path, `heap-${++n}.img`);
  if (n === 1) randomImage(disk, 32 * MiB);
  else copyFileSync(join(dir.path, 'heap-1.img'), disk);
  return Guest.start({ name: `heap-${n}`, memoryBytes: 16 * MiB, disk, workload: 'dirty', options: { seed: 7, ...opts }, stateDir: join(dir.path, `heap-${n}-state`), startPaused: true });
}

/** Steps until the warm-up is over and `extra` steady steps ran. */
async function stepToSteady(g: Guest, extra: number): Promise<number> {
  let s = await g.step(1);
  while (s.progress.phase !== 'steady') s = await g.step(10);
  return (await g.step(extra)).steps;
}

test('a compressible heap compresses, and a replay from the seed gives the same memory', async () => {
  const a = await pausedGuest();
  const b = await pausedGuest();
  try {
    const steps = await stepToSteady(a, 30);
    await b.step(steps);
    assert.ok(compareFingerprints(await a.fingerprint(), await b.fingerprint()).equal, 'same seed, same steps: same memory');
    const os = (await a.status()).progress;
    assert.equal(os.heap, 'compressible');
    let inBytes = 0;
    let outBytes = 0;
    for (let p = 0; p < a.memory.pages; p += 7) {
      if (a.memory.isZero(p)) continue;
      inBytes += PAGE_SIZE;
      outBytes += lz4Compress(a.memory.page(p))?.length ?? PAGE_SIZE;
    }
    assert.ok(inBytes > 0);
    // Half the memory is page cache holding random disk blocks; the heap must pull the whole well below it.
    assert.ok(outBytes / inBytes < 0.8, `LZ4 keeps ${(outBytes / inBytes).toFixed(2)} of the bytes`);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('--write-size 256 changes at most 256 bytes per page write, in one window', async () => {
  const g = await pausedGuest();
  try {
    await stepToSteady(g, 1);
    const before = Buffer.from(g.memory.regions[0]);
    const written0 = (await g.status()).progress.pagesWritten as number;
    const written = ((await g.step(1)).progress.pagesWritten as number) - written0;
    const after = g.memory.regions[0];
    let changed = 0;
    let narrow = 0;
    let dirtied = 0;
    for (let p = 0; p < g.memory.pages; p++) {
      const at = p * PAGE_SIZE;
      let first = -1;
      let last = -1;
      for (let i = 0; i < PAGE_SIZE; i++) {
        if (before[at + i] === after[at + i]) continue;
        if (first < 0) first = i;
        last = i;
        changed++;
      }
      if (first < 0) continue;
      dirtied++;
      if (last - first < 256) narrow++; // a page written twice in the step may have two windows
    }
    assert.ok(dirtied > 0 && written >= dirtied, `${written} writes dirtied ${dirtied} pages`);
    assert.ok(changed <= 256 * written, `${changed} bytes changed by ${written} writes`);
    assert.ok(narrow >= dirtied * 0.8, `${narrow} of ${dirtied} pages changed within one 256-byte window`);
  } finally {
    await g.stop();
  }
});

test('--heap and --write-size out of range are refused with GUEST_CONFIG', async () => {
  const refused = (e: unknown) => e instanceof LivemigError && e.code === 'GUEST_CONFIG';
  await assert.rejects(pausedGuest({ heap: 'zebra' }), refused);
  await assert.rejects(pausedGuest({ writeSize: 0 }), refused);
  await assert.rejects(pausedGuest({ writeSize: PAGE_SIZE + 1 }), refused);
});
