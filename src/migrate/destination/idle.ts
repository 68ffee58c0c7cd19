/**
 * The destination's idle watch: after WELCOME a source sends a byte at least every
 * SOURCE_KEEPALIVE_MS (an empty PAGES when it has nothing else), so one that sends
 * nothing for the idle timeout is stuck or hostile. It fails the session with
 * MIGRATE_TIMEOUT (abort.ts answers ERROR and cleans up): one silent peer must not
 * keep this one-migration-at-a-time destination busy.
 */
import { LivemigError } from '../../errors.ts';
import type { DestinationSession } from './session.ts';

/** Starts watching; returns the function that stops it. */
export function watchIdle(s: DestinationSession, idleMs: number): () => void {
  const tick = Math.max(10, Math.min(1000, idleMs / 4));
  let seen = s.channel.bytesArrived;
  let since = performance.now();
  let last = since;
  const timer = setInterval(() => {
    const now = performance.now();
    // A late tick means this process did not run (a loaded host): that time is not the source's silence.
    if (s.channel.bytesArrived !== seen || now - last > 2 * tick) {
      seen = s.channel.bytesArrived;
      since = now;
    }
    last = now;
    if (now - since < idleMs) return;
    clearInterval(timer);
    s.received.failure ??= new LivemigError('MIGRATE_TIMEOUT', `the source sent nothing for ${idleMs} ms`);
    s.notify();
  }, tick);
  return () => clearInterval(timer);
}
