/**
 * A destination with credentials (`--tls psk|x509`) under attack from peers that
 * have none (tls-session.ts). Its own log, at debug, says where each peer was
 * dropped: every hostile session must be one "peer dropped before HELLO"
 * (MIGRATE_TLS) and none an "incoming migration failed" (a peer that got as far as
 * HELLO). The health check afterwards is a real migration with the credentials.
 */
import { join } from 'node:path';
import { MIGRATION_TERMINATOR, type MigrationFuzzContext } from './migration-session.ts';
import { makeFuzzCredentials, type TlsMode } from './credentials.ts';
import { captureClientHello, runIntruder } from './intruder.ts';
import { unauthenticatedSession, intruderProbe, type IntruderSession } from './tls-session.ts';
import { followMigration } from './replies.ts';
import { startDestination } from './targets.ts';
import { migrationHealth } from './health.ts';
import { bytesPlayer, type Armed, type PlayBounds } from './player.ts';
import type { CampaignOptions } from './campaign.ts';

/** What the destination's log says of the hostile phase. */
export interface TlsFindings {
  mode: TlsMode;
  /** Peers dropped in the TLS handshake, before any livemig byte was read (by code). */
  droppedBeforeHello: Record<string, number>;
  /** Peers that got to HELLO or further and were refused there: must be none. */
  reachedHello: number;
  /** Intruders whose side of the handshake completed (TLS 1.3, the server had yet to check their certificate). */
  intruderClientHandshakes: number;
  /** Application bytes any intruder got back: must be none. */
  intruderAnswered: number;
}

const DROPPED = 'peer dropped before HELLO';
const FAILED = 'incoming migration failed';

/** Polls until cond holds (every 50 ms) or timeoutMs passes; returns whether it held. */
async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return cond();
}

export async function armUnauthenticated(mode: TlsMode, o: CampaignOptions & PlayBounds, base: MigrationFuzzContext): Promise<Armed> {
  const creds = makeFuzzCredentials(mode, join(o.dir, 'creds'));
  const hellos = await Promise.all([creds.legitimate, ...creds.intruders.map((i) => i.options)].map(captureClientHello));
  const ctx = { ...base, hellos, intruders: creds.intruders };
  const target = await startDestination(o.dir, base.diskSpec, base.memoryBytes, [...creds.targetArgs, '--log-level', 'debug', ...(o.targetArgs ?? [])]);
  const probe = intruderProbe(base);
  const findings: TlsFindings = { mode, droppedBeforeHello: {}, reachedHello: 0, intruderClientHandshakes: 0, intruderAnswered: 0 };
  const playBytes = bytesPlayer(target, MIGRATION_TERMINATOR, o, (_s, _r, codes) => followMigration((code) => codes.push(code)));
  return {
    target,
    make: (i) => unauthenticatedSession(o.seed, i, ctx),
    play: async (s, r) => {
      if (!('intruder' in s)) return playBytes(s, r);
      const out = await runIntruder(target.port, target.host, (s as IntruderSession).intruder.options, probe, o.boundMs);
      if (out.clientHandshake) findings.intruderClientHandshakes++;
      findings.intruderAnswered += out.answered;
      return { out, codes: [], failure: out.answered ? `the destination answered ${out.answered} bytes to a peer with the wrong credentials` : undefined };
    },
    settle: async (r) => {
      // The destination logs a drop once its side of the handshake has failed, which may be after the peer saw it.
      await until(() => (target.logCounts()[DROPPED] ?? 0) >= r.sessions, 30_000);
      const log = target.logCounts();
      for (const [k, n] of Object.entries(log)) if (k.startsWith(`${DROPPED}/`)) findings.droppedBeforeHello[k.slice(DROPPED.length + 1)] = n;
      findings.reachedHello = log[FAILED] ?? 0;
      r.tls = findings;
    },
    health: () => migrationHealth(target, o.dir, base.diskSpec, base.memoryBytes, creds.source),
  };
}
