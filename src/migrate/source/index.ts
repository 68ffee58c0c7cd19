/**
 * The source side of a live migration (docs/protocol.md has the state diagram):
 *
 *   HANDSHAKE -> PRECOPY -> STOP_AND_COPY -> VERIFICATION -> SWITCHOVER -> done
 *        \___________\______________\_____________\______________> ROLLBACK
 *
 * Each phase is a file of this folder working on one SourceSession. Any failure
 * before the destination's RESUMED rolls back: the guest goes on here, nothing lost.
 */
import { pino } from 'pino';
import type { Guest } from '../../guest/guest.ts';
import { connectLink, type LinkAddress } from '../../wire/index.ts';
import { HashPool } from '../hash-pool.ts';
import type { MigrationResult } from '../result.ts';
import { SourceSession, type MigrateOptions } from './session.ts';
import { handshake, migratable } from './handshake.ts';
import { startReturnPath } from './return-path.ts';
import { PageSender } from './page-sender.ts';
import { precopy } from './precopy.ts';
import { stopAndCopy } from './stop-and-copy.ts';
import { verification } from './verification.ts';
import { awaitResumed, letGo } from './switchover.ts';
import { rollback } from './rollback.ts';
import { report } from './report.ts';
import { keepAlive } from './keepalive.ts';

export type { MigrateOptions } from './session.ts';

/** Hashing threads booted ahead for a guest (about 80 ms of CPU), kept across failed attempts. */
const pools = new WeakMap<Guest, HashPool>();

/** Boots the hashing threads a migration of this guest will use, so that its time does not include that. */
export function prepareMigration(guest: Guest): void {
  if (!pools.has(guest)) pools.set(guest, new HashPool(null, guest.memory.shared()));
}

function addressOf(opts: MigrateOptions): LinkAddress {
  return opts.socketPath ? { transport: 'unix', path: opts.socketPath } : { transport: 'tcp', host: opts.host, port: opts.port };
}

export async function migrate(guest: Guest, opts: MigrateOptions): Promise<MigrationResult> {
  prepareMigration(guest);
  const hasher = pools.get(guest)!;
  // The guest's state, then the link (under TLS the key comes from its session): nothing to roll back yet.
  const wasRunning = await migratable(guest);
  const link = await connectLink(addressOf(opts), opts.security ?? null);
  const s = new SourceSession(guest, opts, hasher, (opts.log ?? pino({ level: 'silent' })).child({ side: 'source' }), link);
  s.wasRunning = wasRunning;
  hasher.setKey(s.key);
  s.takeDirty(); // from here to round 0 the dirty log samples which pages are hot (precopy.ts sends them last)
  const stopKeepalive = keepAlive(s);
  try {
    await handshake(s);
    startReturnPath(s);
    const sender = new PageSender(s);
    await precopy(s, sender);
    await stopAndCopy(s, sender);
    await verification(s);
    const resumed = await awaitResumed(s, sender);
    const result = report(s, resumed);
    pools.delete(guest);
    const closing = hasher.close();
    await letGo(s);
    await closing.catch(() => {}); // nothing of the migration keeps running once it has returned
    s.log.info({ totalTimeMs: result.totalTimeMs, downtimeMs: result.downtimeMs }, 'migrated');
    return result;
  } catch (err) {
    return rollback(s, err); // the hashing threads stay for another attempt (idle, they keep nothing alive)
  } finally {
    stopKeepalive();
  }
}
