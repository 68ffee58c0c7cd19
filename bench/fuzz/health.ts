/**
 * After the attack, the target must still serve a valid peer. Migration: a real
 * guest (running its workload, disk on the same file) migrates into the fuzzed
 * destination, which holds it paused; the oracle compares both memories from
 * scratch (`fingerprint`), then the destination runs it. NBD: a random MiB is
 * written and read back through our client, and nbdinfo (when installed) reads
 * the export's size.
 */
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Guest } from '../../src/guest/guest.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { controlRequest } from '../../src/guest/control/client.ts';
import { compareFingerprints, type Fingerprint } from '../../src/guest/fingerprint.ts';
import type { GuestStatus } from '../../src/guest/guest.ts';
import { NbdClient } from '../../nbd/index.ts';
import { Rng } from '../../src/util/rng.ts';
import type { LinkSecurity } from '../../src/wire/index.ts';
import type { Target } from './targets.ts';

export interface MigrationHealth {
  verified: boolean;
  oracleEqual: boolean;
  destinationRunning: boolean;
  totalTimeMs: number;
}

/** Polls until cond holds (every 50 ms), failing after timeoutMs with what it waited for. */
async function until(cond: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `security`: the source's credentials, for a destination that has them. */
export async function migrationHealth(target: Target, dir: string, disk: string, memoryBytes: number, security: LinkSecurity | null = null): Promise<MigrationHealth> {
  const source = await Guest.start({ name: 'health', memoryBytes, disk, workload: 'mixed', options: { seed: 9 }, stateDir: join(dir, 'health-src') });
  try {
    await until(async () => (await source.status()).steps >= 30, 'the health guest to run 30 steps');
    const result = await migrate(source, { host: target.host, port: target.port, strategy: 'p2b', maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle', keepPaused: true, security });
    const control = target.control!;
    const [a, b] = await Promise.all([source.fingerprint(), controlRequest<Fingerprint>(control, 'fingerprint')]);
    const oracle = compareFingerprints(a, b);
    await source.stop();
    await controlRequest(control, 'resume');
    const st = await controlRequest<GuestStatus>(control, 'status');
    return { verified: result.verified, oracleEqual: oracle.equal, destinationRunning: st.state === 'running', totalTimeMs: result.totalTimeMs };
  } finally {
    await source.stop().catch(() => {});
  }
}

export interface NbdHealth {
  roundTrip: boolean;
  nbdinfoSize: number | null;
}

export async function nbdHealth(target: Target, exportName: string, size: number): Promise<NbdHealth> {
  const uri = `nbd://${target.host}:${target.port}/${exportName}`;
  const client = await NbdClient.connect(uri);
  try {
    const data = Buffer.alloc(1 << 20);
    new Rng(77).fill(data);
    const offset = Math.floor((size - data.length) / 2 / 4096) * 4096;
    await client.write(offset, data);
    await client.flush();
    const back = await client.read(offset, data.length);
    const has = spawnSync('sh', ['-c', 'command -v nbdinfo']).status === 0;
    const info = has ? spawnSync('nbdinfo', ['--size', uri], { encoding: 'utf8', timeout: 30_000 }) : null;
    return { roundTrip: back.equals(data), nbdinfoSize: info?.status === 0 ? Number(info.stdout.trim()) : null };
  } finally {
    await client.close();
  }
}
