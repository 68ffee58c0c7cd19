/**
 * Live migrations for every workload, with both strategies, over both storage
 * kinds (livemig's own NBD server and nbdkit file), all verified.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { WORKLOAD_NAMES } from '../../src/guest/workloads/registry.ts';
import { requireTools } from '../helpers/tools.ts';
import { tempDir, waitFor } from '../helpers/processes.ts';
import { useSharedDisks } from '../helpers/shared-disks.ts';
import { startWarmGuest, migrateGuest } from '../helpers/migration.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const disks = useSharedDisks(dir.path, 96 * MiB);
after(() => dir.cleanup());

for (const server of ['livemig', 'nbdkit'] as const) {
  for (const workload of WORKLOAD_NAMES) {
    // auto (the default) decides per run what goes as a reference: once per workload, on our server.
    for (const strategy of server === 'livemig' ? (['baseline', 'p2b', 'auto'] as const) : (['baseline', 'p2b'] as const)) {
      test(`${workload} with ${strategy} over ${server === 'livemig' ? 'livemig nbd serve' : 'nbdkit file'}: verified, running, map true`, async (t) => {
        if (server === 'nbdkit' && !requireTools(t, 'nbdkit')) return;
        const disk = server === 'livemig' ? disks.ours() : disks.kit();
        const source = await startWarmGuest(dir.path, `${workload}-${strategy}-${server}`, disk, workload);
        const m = await migrateGuest(dir.path, source, strategy);
        try {
          assert.equal(m.result.verified, true);
          assert.equal(m.oracle.equal, true, 'the oracle finds both memories equal at the switch-over');
          assert.equal(m.result.storageMatch, true);
          const s = await m.destination.status();
          assert.equal(s.state, 'running');
          assert.equal(s.workload, workload);
          const before = s.steps;
          await waitFor(async () => (await m.destination.status()).steps > before, 'the workload to continue on the destination');
          assert.equal(m.mappedWrong, 0, 'every mapping the destination starts with is true');
          const p = m.result.pages;
          assert.ok(p.full + p.zero + p.ref >= 32 * MiB / 4096, 'every page was sent at least once');
          if (strategy === 'baseline') {
            assert.equal(p.ref, 0);
            assert.equal(m.result.mapEntries, 0);
            assert.equal(m.mapped, 0, 'no references, so the destination starts with an empty map');
          } else if (strategy === 'p2b') {
            assert.ok(m.mapped > 1000, `the destination starts with a map (${m.mapped} entries checked)`);
            assert.ok(p.ref > 1000, `p2b sends references (${p.ref})`);
            assert.ok(m.result.mapEntries > 1000, `the map travels with the guest (${m.result.mapEntries} entries)`);
            assert.ok(m.result.nasBytes > 1000 * 4096, 'the destination read referenced blocks from the storage');
          }
        } finally {
          await m.destination.stop();
        }
      });
    }
  }
}
