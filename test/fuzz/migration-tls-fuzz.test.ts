/**
 * A short fuzz of a destination with credentials (the long one is `npm run bench
 * -- fuzz --target migration --tls psk`): peers without them (plain sessions,
 * replayed and mutated ClientHellos, real TLS clients with the wrong key, identity
 * or certificate) are each dropped in the TLS handshake, which the destination's
 * log shows; none reaches HELLO; then a source with the credentials migrates a
 * guest into it, checked by the oracle.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCampaign, type CampaignResult } from '../../bench/fuzz/campaign.ts';
import type { TlsMode } from '../../bench/fuzz/credentials.ts';
import { tempDir } from '../helpers/processes.ts';
import { requireTools } from '../helpers/tools.ts';

const dir = tempDir('livemig-tls-fuzz-test-');
after(() => dir.cleanup());

const families = (r: CampaignResult) => [...new Set(Object.keys(r.kinds).map((k) => k.split('/')[0]))].sort();

async function campaign(tls: TlsMode, budget: number): Promise<CampaignResult> {
  const r = await runCampaign({ target: 'migration', tls, seed: 12, budget, perSession: 200, dir: join(dir.path, tls) });
  assert.equal(r.targetExit, null, 'the destination is alive');
  assert.deepEqual(r.failures, [], 'no session hung, and no intruder was answered');
  assert.ok(r.sent >= budget && r.sessions > 20);
  assert.deepEqual(families(r), ['client-hello', 'intruder', 'plain'], 'every kind of unauthenticated peer came');
  assert.deepEqual(r.tls?.droppedBeforeHello, { MIGRATE_TLS: r.sessions }, 'every hostile peer was dropped in the TLS handshake');
  assert.equal(r.tls?.reachedHello, 0, 'no hostile peer got as far as HELLO');
  assert.deepEqual(r.errorCodes, {}, 'no hostile peer was sent a livemig ERROR frame');
  assert.equal(r.tls?.intruderAnswered, 0);
  assert.ok(r.maxRssBytes < 300 * 2 ** 20, `max RSS ${r.maxRssBytes} bytes`);
  assert.deepEqual(r.health && 'oracleEqual' in r.health ? [r.health.verified, r.health.oracleEqual, r.health.destinationRunning] : r.health, [true, true, true]);
  return r;
}

test('a destination with a PSK drops every unauthenticated peer in the TLS handshake, memory bounded, and then receives a guest migrated with the key', { timeout: 600_000 }, async () => {
  await campaign('psk', 3000);
});

test('a destination with x509 credentials drops peers of another CA, self-signed, without a certificate or with the server\'s own, and then receives a guest', { timeout: 600_000 }, async (t) => {
  if (!requireTools(t, 'openssl')) return;
  const r = await campaign('x509', 1500);
  assert.ok((r.tls?.intruderClientHandshakes ?? 0) > 0, 'TLS 1.3 intruders finished their side and were refused after the server checked their certificate');
});
