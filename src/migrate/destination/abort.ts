/**
 * Any failure before RESUMED: the source is told why (ERROR), and nothing of the
 * guest starts here: its pre-started worker stops, the disk is closed. The source
 * keeps the guest (and the disk's lease, handed back if this side took it). The
 * listener is then ready for another attempt.
 */
import { codeOf } from '../../errors.ts';
import type { DestinationSession } from './session.ts';
import { giveLeaseBack } from './lease.ts';

export async function abort(s: DestinationSession, err: unknown): Promise<never> {
  const e = err as Error;
  s.log.debug({ code: codeOf(e), message: e.message }, 'incoming migration failed');
  await s.channel.send({ name: 'ERROR', body: { code: codeOf(e) ?? 'MIGRATE_FAILED', message: e.message } }).catch(() => {});
  s.channel.destroy();
  if (s.storage) await s.storage.close().catch(() => {});
  const guest = s.guest ?? (s.starting ? await s.starting.catch(() => null) : null);
  if (guest) await guest.stop().catch(() => {}); // never resumed: the source keeps the guest
  else if (s.ready) await s.ready.worker.terminate().catch(() => {});
  if (guest && s.leased) await giveLeaseBack(s, guest).catch((e: Error) => s.log.error({ err: e.message }, "the disk's lease could not be given back"));
  await (s.hasher ?? s.ready?.hasher)?.close().catch(() => {});
  throw err;
}
