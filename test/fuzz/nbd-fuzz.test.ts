/**
 * A short fuzz of the NBD server (the long one is `npm run bench -- fuzz`):
 * hostile handshakes and pipelined requests against `livemig nbd serve` over
 * TCP, then a write/read round trip and nbdinfo.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCampaign } from '../../bench/fuzz/campaign.ts';
import { tempDir } from '../helpers/processes.ts';
import { requireTools } from '../helpers/tools.ts';

const dir = tempDir('livemig-fuzz-test-');
after(() => dir.cleanup());

test('the NBD server survives 20k hostile requests: each answered, every connection closed in time, memory bounded, and then it serves a round trip and nbdinfo', { timeout: 600_000 }, async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const r = await runCampaign({ target: 'nbd', seed: 12, budget: 20_000, perSession: 3000, dir: join(dir.path, 'nbd') });
  assert.equal(r.targetExit, null, 'the server is alive');
  assert.deepEqual(r.failures, [], 'no session hung');
  assert.ok(r.sent >= 20_000);
  // Every request the server read got its reply (requests cut off by a session's last blow excepted).
  assert.ok(r.answered >= 0.95 * r.sent, `${r.answered} replies to ${r.sent} requests`);
  assert.ok(r.maxRssBytes < 300 * 2 ** 20, `max RSS ${r.maxRssBytes} bytes`);
  assert.deepEqual(r.health, { roundTrip: true, nbdinfoSize: 64 * 2 ** 20 });
});
