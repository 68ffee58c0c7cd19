/**
 * Any failure before RESUMED. Until DIGESTS went out the destination cannot
 * resume the guest, and after an ERROR from it it will not: then the guest goes
 * on here as it was, memory and disk untouched (disk re-attached, throttle
 * lifted, resumed if it was running). But if the link fails or times out after
 * DIGESTS, the destination may have resumed it: resuming here too would run the
 * guest twice on one disk. Then the guest stays paused here and the error
 * (MIGRATE_OUTCOME_UNKNOWN) says to check the destination first; `livemig
 * resume` takes the disk back and runs it here. Where the disk has a lease, the
 * lease decides instead (settleByLease).
 */
import { LivemigError, codeOf, type ErrorCode } from '../../errors.ts';
import { letGo } from './switchover.ts';
import type { SourceSession } from './session.ts';

/**
 * A link that dropped under a send may have carried the destination's reason first:
 * the return path reports either that ERROR or the link's end soon after, so wait
 * for its failure (not for any frame: a PROGRESS heard earlier says nothing), bounded.
 */
async function failureHeard(s: SourceSession, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!s.heard.failure && Date.now() < until) await s.heardSomething(until - Date.now());
}

/** The error to report: the destination's reason if it gave one, else this side's. */
async function reasonFor(s: SourceSession, err: unknown): Promise<Error> {
  if (codeOf(err) === 'MIGRATE_LINK_LOST') await failureHeard(s, 2000);
  const reason = (s.heard.failure && codeOf(s.heard.failure) !== 'MIGRATE_LINK_LOST' ? s.heard.failure : err) as Error;
  return reason instanceof LivemigError || codeOf(reason) ? reason : new LivemigError('MIGRATE_FAILED', reason.message, { cause: reason });
}

/**
 * Outcome unknown on a leased disk: the lease says who has the guest. Taking the
 * disk back acquires the lease, which renews it: a handover the destination has
 * not made yet fails from then on, so the guest resumes here alone. If the
 * destination took the lease, the guest is its: this copy lets go. If the
 * storage does not answer, nobody can know: the guest stays paused.
 */
async function settleByLease(s: SourceSession, reason: Error): Promise<never> {
  try {
    await s.guest.attachDisk();
  } catch (err) {
    if (codeOf(err) === 'GUEST_DISK_LEASED') {
      await letGo(s);
      s.log.warn({ code: codeOf(reason) }, "the destination holds the disk's lease: letting go");
      throw new LivemigError('MIGRATE_HANDED_OVER', `${reason.message}; but the destination took the disk's lease, so the guest is the destination's: this copy ${s.opts.keepPaused ? 'stays paused for good' : 'was stopped'}; check that it runs there ('livemig status' on the destination)`, { cause: reason });
    }
    s.log.warn({ err: (err as Error).message }, 'outcome unknown and the lease unreadable: the guest stays paused here');
    throw new LivemigError('MIGRATE_OUTCOME_UNKNOWN', `${reason.message}, and the disk's lease cannot be read (${(err as Error).message}): this copy stays paused; if the destination runs the guest ('livemig status' there), stop this one, else 'livemig resume' here once the storage answers (it resumes only while it holds the lease)`, { cause: reason });
  }
  s.detached = false;
  if (s.paused && s.wasRunning) await s.guest.resume().catch(() => {});
  s.log.info({ code: codeOf(reason) }, "still held the disk's lease and renewed it: the guest goes on here");
  throw new LivemigError((codeOf(reason) ?? 'MIGRATE_FAILED') as ErrorCode, `${reason.message}; the source still held the disk's lease and renewed it, so the destination cannot resume: the guest goes on here`, { cause: reason });
}

export async function rollback(s: SourceSession, err: unknown): Promise<never> {
  s.channel?.destroy();
  const reason = await reasonFor(s, err);
  if (s.convergence.throttle) await s.guest.throttle(0).catch(() => {});
  if (s.digestsSent && !s.heard.refused && s.lease) return settleByLease(s, reason);
  if (s.digestsSent && !s.heard.refused) {
    s.log.warn({ code: codeOf(reason) }, 'outcome unknown: the guest stays paused here');
    throw new LivemigError('MIGRATE_OUTCOME_UNKNOWN', `${reason.message}, after the destination had all it needed to resume the guest: this copy stays paused; check the destination ('livemig status'), and only if the guest does not run there, 'livemig resume' here`, { cause: reason });
  }
  if (s.detached) await s.guest.attachDisk().catch(() => {});
  if (s.paused && s.wasRunning) await s.guest.resume().catch(() => {});
  s.log.debug({ code: codeOf(reason), message: reason.message }, 'migration failed; the guest stays here');
  throw reason;
}
