/**
 * Every workload profile runs against `livemig nbd serve` and `nbdkit file`;
 * afterwards every mapping in the map is checked byte for byte by `p2b verify`.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Guest, type GuestStatus } from '../../src/guest/guest.ts';
import { decodeDeviceState } from '../../src/guest/device-state.ts';
import { WORKLOAD_NAMES } from '../../src/guest/workloads/registry.ts';
import { requireTools } from '../helpers/tools.ts';
import { run, tempDir, waitFor, REPO } from '../helpers/processes.ts';
import { useSharedDisks } from '../helpers/shared-disks.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const disks = useSharedDisks(dir.path, 128 * MiB);
after(() => dir.cleanup());

async function waitForSteady(guest: Guest, timeoutMs = 30_000): Promise<GuestStatus> {
  let s: GuestStatus | null = null;
  await waitFor(async () => {
    s = await guest.status();
    if (s.error) throw new Error(`guest failed: ${s.error.message}`);
    return s.progress.phase === 'steady' && s.steps > 0;
  }, `guest ${guest.config.name} to reach steady state`, timeoutMs);
  return s!;
}

/** Some steady-state work (evictions, rewrites, writes, flushes): a count of steps, whatever the machine's speed. */
async function runSteps(guest: Guest, from: number, steps: number): Promise<void> {
  await waitFor(async () => (await guest.status()).steps >= from + steps, `guest ${guest.config.name} to run ${steps} steps`, 60_000);
}

/**
 * Pauses, dumps memory with its map snapshot, and runs the real `p2b verify` on
 * them. Paused throughout: a guest that writes its disk would otherwise change
 * blocks under the check.
 */
async function verify(guest: Guest, storage: string, tag: string): Promise<{ checked: number; mismatches: number }> {
  const image = join(dir.path, `${tag}.mem`);
  await guest.pause();
  const dumped = await guest.dumpMemory(image);
  const r = await run(process.execPath, [join(REPO, 'bin/p2b.js'), 'verify', dumped.map, '--memory', image, '--storage', storage, '--json']);
  assert.equal(r.code, 0, `p2b verify failed for ${tag}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout);
}

for (const server of ['livemig', 'nbdkit'] as const) {
  for (const workload of WORKLOAD_NAMES) {
    test(`${workload} on ${server === 'livemig' ? 'livemig nbd serve' : 'nbdkit file'}: the map is true to the byte`, async (t) => {
      if (server === 'nbdkit' && !requireTools(t, 'nbdkit')) return;
      const disk = server === 'livemig' ? disks.ours() : disks.kit();
      const guest = await Guest.start({
        name: `${workload}-${server}`,
        memoryBytes: 32 * MiB,
        disk,
        workload,
        options: { seed: 11, dirtyRate: 16 * MiB, writeRate: 8 * MiB },
        stateDir: join(dir.path, `${workload}-${server}`),
      });
      try {
        const steady = await waitForSteady(guest);
        await runSteps(guest, steady.steps, 20);
        const v = await verify(guest, disk, `${workload}-${server}`);
        const s = await guest.status();
        assert.ok(v.checked > 1000, `expected a populated map, checked ${v.checked}`);
        assert.equal(v.mismatches, 0);
        if (workload === 'pagecache' || workload === 'idle') assert.ok(s.p2b.mappedPages / s.p2b.pages > 0.8, `mapped share ${s.p2b.mappedPages / s.p2b.pages}`);
        if (workload === 'diskwrite') {
          assert.ok(s.disk.bytesWritten > 0 && s.disk.flushes > 0, 'diskwrite writes and flushes');
          assert.ok(guest.map.count('mappedByWrite') > 0 && guest.map.count('flushedWrites') > 0, 'mappings made by flushed writes');
          assert.ok(guest.map.count('invalidatedByBlockWrite') + guest.map.count('invalidatedByMemoryWrite') > 0, 'overwrites invalidate');
        }
        if (workload === 'mixed') assert.ok((s.progress.writebacks as number) > 0 && (s.progress.commits as number) > 0);
        if (workload === 'dirty') assert.ok((s.progress.pagesWritten as number) > 0);
      } finally {
        await guest.stop();
      }
    });
  }
}

test('a guest resumed from its device state and memory continues exactly as the original', async () => {
  const common = { memoryBytes: 16 * MiB, disk: disks.ours(), workload: 'pagecache', options: { seed: 5 } };
  const a = await Guest.start({ ...common, name: 'det-a', stateDir: join(dir.path, 'det-a') });
  let b: Guest | null = null;
  try {
    await waitForSteady(a);
    await a.pause();
    const device = decodeDeviceState(await a.deviceStateBytes(), a.memory.pages);
    b = await Guest.start({ ...common, name: 'det-b', stateDir: join(dir.path, 'det-b'), startPaused: true, device });
    a.memory.regions.forEach((r, i) => b!.memory.regions[i].set(r));
    await a.step(40);
    await b.step(40);
    assert.equal(b.memory.regionDigest(0), a.memory.regionDigest(0), 'same state, same steps: same memory');
    assert.deepEqual(decodeDeviceState(await b.deviceStateBytes(), b.memory.pages).rng, decodeDeviceState(await a.deviceStateBytes(), a.memory.pages).rng);
    // A different seed from the same point diverges, so the check above can fail.
    const other = await Guest.start({ ...common, options: { seed: 6 }, name: 'det-c', stateDir: join(dir.path, 'det-c'), startPaused: true, device: { ...device, rng: [1, 2, 3, 4] } });
    a.memory.regions.forEach((r, i) => other.memory.regions[i].set(r));
    await other.step(40);
    assert.notEqual(other.memory.regionDigest(0), a.memory.regionDigest(0));
    await other.stop();
  } finally {
    await a.stop();
    await b?.stop();
  }
});
