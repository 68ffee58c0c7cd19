/**
 * Any failure before RESUMED: the guest goes on here as it was, memory and disk
 * untouched: the disk re-attached, the throttle lifted, a paused guest resumed
 * (if it was running when the migration began).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { LivemigError, codeOf } from '../../errors.ts';
import type { SourceSession } from './session.ts';

export async function rollback(s: SourceSession, err: unknown): Promise<never> {
  s.channel?.destroy();
  if (s.detached) await s.guest.attachDisk().catch(() => {});
  if (s.convergence.throttle) await s.guest.throttle(0).catch(() => {});
  if (s.paused && s.wasRunning) await s.guest.resume().catch(() => {});
  // A link that dropped under a send may have carried the destination's reason first.
  if (codeOf(err) === 'MIGRATE_LINK_LOST' && !s.heard.failure) await Promise.race([s.heardSomething(100), delay(100)]);
  const reason = (s.heard.failure && codeOf(s.heard.failure) !== 'MIGRATE_LINK_LOST' ? s.heard.failure : err) as Error;
  s.log.debug({ code: codeOf(reason), message: reason.message }, 'migration failed; the guest stays here');
  throw reason instanceof LivemigError || codeOf(reason) ? reason : new LivemigError('MIGRATE_FAILED', reason.message, { cause: reason });
}
