/**
 * "Nothing lost", checked rather than assumed. The workloads are deterministic:
 * the same seed and the same number of steps give the same memory and the same
 * disk, whatever the timing. So after a failed migration the source guest, paused
 * at step N, must equal a fresh guest run to step N from the same seed on a copy
 * of the disk as it was before the source started: memory byte for byte (the
 * oracle's fingerprint) and disk byte for byte.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Guest } from '../../src/guest/guest.ts';
import { compareFingerprints, type Fingerprint } from '../../src/guest/fingerprint.ts';
import { startNbdServe, type ServeProcess } from './nbd-serve.ts';

/** A disk of its own for one guest: the image served by `livemig nbd serve`, and a pristine copy kept aside. */
export interface OwnDisk {
  image: string;
  pristine: string;
  server: ServeProcess;
  uri: string;
}

export async function ownDisk(dir: string, base: string, name: string): Promise<OwnDisk> {
  const image = join(dir, `${name}.img`);
  const pristine = join(dir, `${name}.pristine.img`);
  copyFileSync(base, image);
  copyFileSync(base, pristine);
  const server = await startNbdServe(['--export', `disk=${image}`]);
  return { image, pristine, server, uri: server.uri('disk') };
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/** What the source guest looks like from where the check can reach it: in-process, or over its control socket. */
export interface Inspectable {
  config: Pick<Guest['config'], 'memoryBytes' | 'workload' | 'options'>;
  pause(): Promise<{ steps: number }>;
  fingerprint(): Promise<Fingerprint>;
  resume(): Promise<unknown>;
}

/**
 * Pauses the source, replays its steps on a fresh guest over a copy of the pristine
 * disk, and asserts that memory and disk are identical; then resumes the source.
 */
export async function assertNothingLost(source: Inspectable, disk: Pick<OwnDisk, 'image' | 'pristine'>, dir: string): Promise<void> {
  const { steps } = await source.pause();
  const replayImage = join(dir, `replay-${Date.now()}.img`);
  copyFileSync(disk.pristine, replayImage);
  const { memoryBytes, workload, options } = source.config;
  const replay = await Guest.start({ name: 'replay', memoryBytes, disk: replayImage, workload, options, stateDir: join(dir, `replay-state-${Date.now()}`), startPaused: true });
  try {
    await replay.step(steps);
    const oracle = compareFingerprints(await source.fingerprint(), await replay.fingerprint());
    assert.ok(oracle.equal, `the source's memory after ${steps} steps differs from a replay's in ${oracle.differentChunks} MiB (first at byte ${oracle.firstDifference})`);
  } finally {
    await replay.stop();
  }
  assert.equal(sha256(disk.image), sha256(replayImage), `the disk after ${steps} steps differs from a replay's`);
  await source.resume();
  rmSync(replayImage, { force: true });
}
