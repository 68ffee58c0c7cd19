/**
 * A short fuzz of the migration protocol (the long one is `npm run bench -- fuzz`):
 * hostile sessions against `livemig run --incoming` over TCP, then a real
 * migration into it, checked by the oracle.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCampaign, type CampaignResult } from '../../bench/fuzz/campaign.ts';
import { tempDir } from '../helpers/processes.ts';

const dir = tempDir('livemig-fuzz-test-');
after(() => dir.cleanup());

/** Files a target left in its TMPDIR, apart from tsx's compile cache. */
const ownLeftovers = (r: CampaignResult) => r.leftovers.filter((f) => !f.startsWith('tsx-'));

test('a destination survives 20k hostile frames: every connection closed in time, memory bounded, no files left, and then it receives a guest the oracle verifies', { timeout: 600_000 }, async () => {
  const r = await runCampaign({ target: 'migration', seed: 12, budget: 20_000, perSession: 3000, dir: join(dir.path, 'migration') });
  assert.equal(r.targetExit, null, 'the destination is alive');
  assert.deepEqual(r.failures, [], 'no session hung or made the destination fail without a reason');
  assert.ok(r.sent >= 20_000 && r.sessions > 5);
  assert.ok((r.errorCodes.MIGRATE_PROTOCOL ?? 0) > 0, 'malformed frames were refused as protocol errors');
  assert.ok(r.maxRssBytes < 300 * 2 ** 20, `max RSS ${r.maxRssBytes} bytes`);
  assert.deepEqual(r.health && 'oracleEqual' in r.health ? [r.health.verified, r.health.oracleEqual, r.health.destinationRunning] : r.health, [true, true, true]);
  assert.deepEqual(ownLeftovers(r).filter((f) => !f.startsWith('livemig-health/')), [], 'refused sessions leave nothing in TMPDIR');
});
