/**
 * A short soak (the long one is `npm run bench -- soak`): a running guest
 * migrated six times between two agents that stay (`run --incoming --stay`),
 * every migration checked by the oracle; the agents' open file descriptors do
 * not grow once warm, and nothing is left when they stop.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { runSoak } from '../../bench/soak/ping-pong.ts';
import { tempDir } from '../helpers/processes.ts';

const dir = tempDir('livemig-soak-test-');
after(() => dir.cleanup());

test('six ping-pong migrations between two agents: each verified by the oracle, no fd growth after warm-up, nothing left behind', { timeout: 900_000 }, async () => {
  const r = await runSoak({ dir: dir.path, migrations: 6, memoryBytes: 16 << 20 });
  assert.deepEqual(r.migrations.map((m) => `${m.from}->${m.to}`), ['A->B', 'B->A', 'A->B', 'B->A', 'A->B', 'B->A']);
  for (const m of r.migrations) assert.deepEqual([m.index, m.verified, m.oracleEqual], [m.index, true, true]);
  // Migrations 2 and 6 leave each agent in the same role. A control connection still closing may count once.
  const [warm, last] = [r.migrations[1], r.migrations[5]];
  for (const a of ['A', 'B'] as const) {
    assert.ok(last.agents[a].fds <= warm.agents[a].fds + 1, `agent ${a}: ${warm.agents[a].fds} fds after migration 2, ${last.agents[a].fds} after 6`);
  }
  assert.deepEqual(r.left, { socketFiles: [], tmpFiles: [], netns: [], exitCodes: { A: 0, B: 0 } });
});
