/**
 * Destination phase 3, draining: after COMPLETE every reference is resolved and
 * every page asked for in full has arrived (a reference that fails again asks
 * again), so memory holds the source's pages at pause.
 */
import { LivemigError } from '../../errors.ts';
import type { DestinationSession } from './session.ts';

export async function drain(s: DestinationSession): Promise<void> {
  s.setState('draining');
  for (;;) {
    await s.queue.drain().catch(() => {
      throw s.storageFailed();
    });
    s.target.applyStaleForTest();
    if (s.versions.owed === 0 && s.queue.idle) break;
    await s.until(() => s.versions.owed === 0);
  }
  if (!s.received.device) throw new LivemigError('MIGRATE_PROTOCOL', 'no DEVICE_STATE before COMPLETE');
  s.log.debug('drained');
}
