/**
 * A guest whose disk is an image file (FileBackend), not an NBD export: both
 * hosts open the same path (here one machine; across hosts, an NFS mount). The
 * disk's one writer is whoever holds its flock (src/storage/disk-lock.ts): the
 * source until it pauses and hands the disk over, the destination from then on.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { copyFileSync } from 'node:fs';
import { LivemigError } from '../../src/errors.ts';
import { DiskLock } from '../../src/storage/disk-lock.ts';
import { tempDir, livemig, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startWarmGuest, migrateGuest } from '../helpers/migration.ts';
import { assertNothingLost } from '../helpers/nothing-lost.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
after(() => dir.cleanup());

/** Another process trying to take the image for itself: `livemig nbd serve` exports it read-write, under an exclusive flock. */
async function assertLockedAgainstOthers(image: string): Promise<void> {
  const r = await livemig(['nbd', 'serve', '--export', image, '--listen', 'tcp://127.0.0.1:0'], { timeoutMs: 30_000 });
  assert.equal(r.code, 1, `nbd serve must fail on a locked image: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, /^livemig: .* is locked by another process .*\[NBD_EXPORT_LOCKED\]$/m);
}

test('a file-backed disk is handed over by its flock: locked by the source while it runs, by the destination after; the oracle and a replay of every step agree', { timeout: 180_000 }, async () => {
  const image = join(dir.path, 'guest.img');
  const pristine = join(dir.path, 'guest.pristine.img');
  randomImage(pristine, 64 * MiB);
  copyFileSync(pristine, image);
  // `mixed` reads its table and writes its log and pages back: the disk changes on both hosts.
  const source = await startWarmGuest(dir.path, 'file', image, 'mixed', 16 * MiB);
  await assertLockedAgainstOthers(image);
  let sourceSteps = -1;
  const m = await migrateGuest(dir.path, source, 'p2b', {
    destinationDisk: image,
    atSwitchover: async (src, dst) => {
      sourceSteps = (await src.status()).steps;
      // The destination holds the disk now (it took the lock before resuming): the source cannot take it back.
      await assert.rejects(src.attachDisk(), (e: unknown) => e instanceof LivemigError && e.code === 'GUEST_DISK_LOCKED');
      await assertLockedAgainstOthers(image);
      assert.equal((await dst.status()).disk.description, `file ${image}`);
    },
  });
  try {
    assert.equal(m.result.verified, true);
    assert.equal(m.oracle.equal, true, 'the oracle finds both memories equal');
    assert.equal(m.result.storageMatch, true);
    assert.ok(m.result.pages.ref > 1000, `references resolved from the file (${m.result.pages.ref})`);
    assert.ok(m.mapped > 1000);
    assert.equal(m.mappedWrong, 0);
    // The destination goes on writing the disk; memory and disk then equal a guest run from the
    // pristine image for all the steps both hosts ran.
    const arrived = (await m.destination.status()).steps;
    await waitFor(async () => (await m.destination.status()).steps >= arrived + 50, 'the destination to run 50 steps');
    assert.ok(sourceSteps > 0);
    const d = m.destination;
    await assertNothingLost({
      config: d.config,
      pause: async () => ({ steps: sourceSteps + (await d.pause()).steps }),
      fingerprint: () => d.fingerprint(),
      resume: () => d.resume(),
    }, { image, pristine }, dir.path);
  } finally {
    await m.destination.stop();
  }
  // Stopped, the destination lets go: the image can be taken again.
  const lock = await DiskLock.take(image);
  await lock!.release();
});
