/**
 * Fuzzing both protocols against real processes over real TCP (bench/fuzz/):
 * a destination waiting for a guest, and the NBD server. Goals: no crash, no
 * hang (every connection closed within the bound), bounded memory (max RSS),
 * and a valid peer served afterwards (a migration checked by the oracle; an
 * NBD write/read round trip and nbdinfo).
 */
import { mkdtempSync, rmSync, cpSync, mkdirSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runCampaign, FUZZ_GUEST_BYTES, type CampaignResult, type FuzzTarget } from '../fuzz/campaign.ts';
import { replayCase } from '../fuzz/replay.ts';
import type { TlsMode } from '../fuzz/credentials.ts';
import { saveResult, table, RESULTS_DIR } from '../lib/report.ts';
import { progress, progressDone } from '../lib/progress.ts';

export const help = `Usage: npm run bench -- fuzz [--target migration|nbd] [--frames 1000000] [--requests 1000000]
                           [--tls psk|x509] [--seed 1] [--per-session N] [--bound-ms 30000]
                           [--quiet-ms N] [--target-arg ARG ...] [--json] [--out DIR] [--keep]
       npm run bench -- fuzz --replay FILE

Sends hostile sessions (valid sessions built with the protocol's codecs, then
mutated; and random bytes) to \`livemig run --incoming\` (--frames of them) and
to \`livemig nbd serve\` (--requests), each session on its own TCP connection.
Without --target both run. Reports sessions, frames or requests, max RSS of the
target, the slowest close, hangs, crashes, and the health check afterwards.
Failing sessions are written to DIR/<target>/cases/*.bin; --replay sends one again.
--target-arg passes an argument to the target process.

--tls psk|x509 (migration only) gives the destination credentials (--tls-psk or
--tls-creds; x509 needs openssl) and makes every hostile peer unauthenticated:
plain sessions as above, ClientHellos replayed or mutated, real TLS clients with
the wrong key, identity or certificate. Each must be dropped in the TLS handshake
(the destination's log says MIGRATE_TLS, never a refused HELLO); the health
check is a migration with the right credentials. A ClientHello or an intruder
counts as one frame; --per-session defaults to 200 there, so that the frames
spread over many connections.
--quiet-ms is how long a target that waits for more is left before it is nudged
(default 3000, 1000 with --tls).`;

const fmtMiB = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

function row(r: CampaignResult): (string | number)[] {
  const h = r.health as Record<string, unknown> | null;
  const healthy = h && !('error' in h) && (r.target === 'migration' ? h.oracleEqual === true && h.destinationRunning === true : h.roundTrip === true);
  return [r.target, r.sessions, r.sent, r.target === 'nbd' ? r.answered : '-', Math.round(r.sent / (r.elapsedMs / 1000)), fmtMiB(r.maxRssBytes), r.maxCloseMs, r.hangs, r.targetExit ?? 'alive', r.failures.length, healthy ? 'yes' : `NO ${JSON.stringify(h)}`];
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      target: { type: 'string' },
      frames: { type: 'string', default: '1000000' },
      requests: { type: 'string', default: '1000000' },
      seed: { type: 'string', default: '1' },
      'per-session': { type: 'string' },
      'bound-ms': { type: 'string', default: '30000' },
      'target-arg': { type: 'string', multiple: true },
      tls: { type: 'string' },
      'quiet-ms': { type: 'string' },
      replay: { type: 'string' },
      json: { type: 'boolean' },
      out: { type: 'string' },
      keep: { type: 'boolean' },
    },
  });
  if (values.replay) {
    console.log(JSON.stringify(await replayCase(values.replay), null, 2));
    return;
  }
  const targets: FuzzTarget[] = values.target ? [values.target as FuzzTarget] : ['migration', 'nbd'];
  if (targets.some((t) => t !== 'migration' && t !== 'nbd')) throw new Error('--target must be migration or nbd');
  const tls = values.tls as TlsMode | undefined;
  if (tls !== undefined && tls !== 'psk' && tls !== 'x509') throw new Error('--tls must be psk or x509');
  if (tls && values.target !== 'migration') throw new Error('--tls goes with --target migration');
  const perSession = values['per-session'] ? Number(values['per-session']) : tls ? 200 : undefined;
  const seed = Number(values.seed);
  const work = mkdtempSync(join(tmpdir(), 'livemig-fuzz-'));
  const results: CampaignResult[] = [];
  const load0 = loadavg();
  try {
    for (const target of targets) {
      const budget = Number(target === 'migration' ? values.frames : values.requests);
      const r = await runCampaign({
        target, seed, budget, dir: join(work, target), boundMs: Number(values['bound-ms']), tls,
        perSession, targetArgs: values['target-arg'], ...(values['quiet-ms'] ? { quietMs: Number(values['quiet-ms']) } : {}),
        onProgress: (done, all) => progress(`${target}: ${done}/${all}`),
      });
      progressDone();
      results.push(r);
      if (r.failures.length && values.out) {
        mkdirSync(join(values.out, `fuzz-cases-${target}`), { recursive: true });
        cpSync(join(work, target, 'cases'), join(values.out, `fuzz-cases-${target}`), { recursive: true });
      }
    }
  } finally {
    if (!values.keep) rmSync(work, { recursive: true, force: true });
    else console.error(`kept ${work}`);
  }
  const command = `npm run bench -- fuzz ${args.join(' ')}`.trim();
  const path = saveResult(`fuzz${values.target ? `-${values.target}` : ''}${tls ? `-${tls}` : ''}`, command, { guestBytes: FUZZ_GUEST_BYTES, loadavgBefore: load0, loadavgAfter: loadavg(), results }, values.out ?? RESULTS_DIR);
  if (values.json) console.log(JSON.stringify(results));
  console.log(table(['target', 'sessions', 'frames/requests', 'replies', 'per s', 'max RSS', 'slowest close ms', 'hangs', 'target', 'failing cases', 'serves a valid peer after'], results.map(row)));
  console.log(`load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; results in ${path}`);
  for (const r of results.filter((x) => x.tls)) {
    const t = r.tls!;
    console.log(`TLS (${t.mode}): dropped before HELLO ${JSON.stringify(t.droppedBeforeHello)} of ${r.sessions} sessions; reached HELLO ${t.reachedHello}; ERROR frames ${JSON.stringify(r.errorCodes)}; intruders whose client side completed ${t.intruderClientHandshakes}, answered bytes ${t.intruderAnswered}`);
  }
  const leaked = (r: CampaignResult) => r.tls && ((r.tls.droppedBeforeHello.MIGRATE_TLS ?? 0) !== r.sessions || r.tls.reachedHello > 0);
  if (results.some((r) => r.failures.length || r.targetExit || leaked(r))) process.exitCode = 1;
}
