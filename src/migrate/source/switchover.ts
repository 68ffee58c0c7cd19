/**
 * Source phase 5, switch-over: serve the pages the destination still asks for
 * until it says RESUMED (it has the guest, running or held), then let go of the
 * guest here: stop it, or keep it paused in 'postmigrate' when asked.
 */
import { LivemigError } from '../../errors.ts';
import { TIMEOUT, type Resumed } from '../../wire/index.ts';
import type { PageSender } from './page-sender.ts';
import type { SourceSession } from './session.ts';

export async function awaitResumed(s: SourceSession, sender: PageSender): Promise<Resumed> {
  const timeout = s.opts.completeTimeoutMs ?? TIMEOUT.RESUMED;
  const deadline = performance.now() + timeout;
  for (;;) {
    s.check();
    if (s.heard.resumed) return s.heard.resumed;
    const requested = s.takeRequested();
    if (requested.length) {
      await sender.send(requested, false);
      continue;
    }
    const left = deadline - performance.now();
    if (left <= 0) throw new LivemigError('MIGRATE_TIMEOUT', `the destination did not resume within ${timeout} ms`);
    await s.heardSomething(Math.min(left, 1000));
  }
}

/** The guest runs on the destination now. */
export async function letGo(s: SourceSession): Promise<void> {
  s.channel.close();
  if (s.opts.keepPaused) s.guest.markMigrated();
  else await s.guest.stop();
}
