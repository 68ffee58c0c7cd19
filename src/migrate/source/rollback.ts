/**
 * Any failure before RESUMED. Until DIGESTS went out the destination cannot
 * resume the guest, and after an ERROR from it it will not: then the guest goes
 * on here as it was, memory and disk untouched (disk re-attached, throttle
 * lifted, resumed if it was running). But if the link fails or times out after
 * DIGESTS, the destination may have resumed it: resuming here too would run the
 * guest twice on one disk. Then the guest stays paused here and the error
 * (MIGRATE_OUTCOME_UNKNOWN) says to check the destination first; `livemig
 * resume` takes the disk back and runs it here.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { LivemigError, codeOf } from '../../errors.ts';
import type { SourceSession } from './session.ts';

/** The error to report: the destination's reason if it gave one, else this side's. */
async function reasonFor(s: SourceSession, err: unknown): Promise<Error> {
  // A link that dropped under a send may have carried the destination's reason first.
  if (codeOf(err) === 'MIGRATE_LINK_LOST' && !s.heard.failure) await Promise.race([s.heardSomething(100), delay(100)]);
  const reason = (s.heard.failure && codeOf(s.heard.failure) !== 'MIGRATE_LINK_LOST' ? s.heard.failure : err) as Error;
  return reason instanceof LivemigError || codeOf(reason) ? reason : new LivemigError('MIGRATE_FAILED', reason.message, { cause: reason });
}

export async function rollback(s: SourceSession, err: unknown): Promise<never> {
  s.channel?.destroy();
  const reason = await reasonFor(s, err);
  if (s.convergence.throttle) await s.guest.throttle(0).catch(() => {});
  if (s.digestsSent && !s.heard.refused) {
    s.log.warn({ code: codeOf(reason) }, 'outcome unknown: the guest stays paused here');
    throw new LivemigError('MIGRATE_OUTCOME_UNKNOWN', `${reason.message}, after the destination had all it needed to resume the guest: this copy stays paused; check the destination ('livemig status'), and only if the guest does not run there, 'livemig resume' here`, { cause: reason });
  }
  if (s.detached) await s.guest.attachDisk().catch(() => {});
  if (s.paused && s.wasRunning) await s.guest.resume().catch(() => {});
  s.log.debug({ code: codeOf(reason), message: reason.message }, 'migration failed; the guest stays here');
  throw reason;
}
