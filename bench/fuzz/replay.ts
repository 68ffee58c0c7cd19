/**
 * Sends a recorded failing session (a .bin written by a campaign, with its .json)
 * to a fresh target, once; a destination with credentials (--tls) gets fresh ones.
 * An intruder (a TLS client, not bytes) is replayed by running its campaign's seed again.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDiskImage } from '../../src/demo/disk-image.ts';
import { runSession, type SessionOutcome } from './connection.ts';
import { followMigration } from './replies.ts';
import { startDestination, startNbdServer } from './targets.ts';
import { FUZZ_GUEST_BYTES } from './campaign.ts';
import { MIGRATION_TERMINATOR } from './migration-session.ts';
import { NBD_TERMINATOR } from './nbd-session.ts';
import { makeFuzzCredentials, type TlsMode } from './credentials.ts';

export interface Replayed extends SessionOutcome {
  errors: { code: string; message: string }[];
  targetAlive: boolean;
}

export async function replayCase(file: string, boundMs = 30_000): Promise<Replayed> {
  const meta = JSON.parse(readFileSync(`${file}.json`, 'utf8')) as { target: string; fin?: boolean; tls?: TlsMode | null; kind: string };
  if (meta.kind.startsWith('intruder/')) throw new Error(`${file} is a TLS client (${meta.kind}), not bytes: run the campaign with its seed again`);
  const dir = mkdtempSync(join(tmpdir(), 'livemig-replay-'));
  const disk = join(dir, 'disk.img');
  makeDiskImage(disk, 32 << 20);
  const target = meta.target === 'migration'
    ? await startDestination(dir, disk, FUZZ_GUEST_BYTES, meta.tls ? makeFuzzCredentials(meta.tls, join(dir, 'creds')).targetArgs : [])
    : await startNbdServer(dir, ['--memory-export', 'mem=64MiB', '--export', `disk=${disk}`, '--max-request', String(1 << 20)]);
  try {
    const errors: Replayed['errors'] = [];
    const terminator = meta.target === 'migration' ? MIGRATION_TERMINATOR : NBD_TERMINATOR;
    const out = await runSession(target.port, target.host, { bytes: [readFileSync(file)], fin: meta.fin }, { quietMs: 3000, boundMs, terminator }, followMigration((code, message) => errors.push({ code, message })));
    return { ...out, errors, targetAlive: target.process.exitCode === null && target.process.signalCode === null };
  } finally {
    await target.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
