/**
 * A short soak (the long one is `npm run bench -- soak`): a running guest
 * migrated six times between two agents that stay (`run --incoming --stay`),
 * every migration checked by the oracle; the agents' open file descriptors,
 * counted once each agent is idle, are the same in the same role, and nothing
 * is left when they stop.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { runSoak } from '../../bench/soak/ping-pong.ts';
import { tempDir } from '../helpers/processes.ts';

const dir = tempDir('livemig-soak-test-');
after(() => dir.cleanup());

test('six ping-pong migrations between two agents: each verified by the oracle, the same fds in the same role, nothing left behind', { timeout: 900_000 }, async () => {
  const r = await runSoak({ dir: dir.path, migrations: 6, memoryBytes: 16 << 20 });
  assert.deepEqual(r.migrations.map((m) => `${m.from}->${m.to}`), ['A->B', 'B->A', 'A->B', 'B->A', 'A->B', 'B->A']);
  for (const m of r.migrations) assert.deepEqual([m.index, m.verified, m.oracleEqual], [m.index, true, true]);
  // Sampled at a quiet point (the agent idle, its control connections closed), an agent in the same role has the same fds.
  for (const a of ['A', 'B'] as const) {
    const fds = r.migrations.map((m) => m.agents[a].fds);
    assert.deepEqual(fds.slice(2), fds.slice(0, -2), `agent ${a}: fds after each migration ${fds.join(', ')}`);
  }
  assert.deepEqual(r.left, { socketFiles: [], tmpFiles: [], netns: [], exitCodes: { A: 0, B: 0 } });
});
