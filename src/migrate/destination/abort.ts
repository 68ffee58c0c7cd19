/**
 * Any failure before RESUMED: the source is told why (ERROR), and nothing of the
 * guest starts here: its pre-started worker stops, the disk is closed. The source
 * keeps the guest (and the disk's lease, handed back if this side took it). The
 * listener is then ready for another attempt.
 */
import { rm, rmdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { codeOf } from '../../errors.ts';
import type { Guest } from '../../guest/guest.ts';
import type { DestinationSession } from './session.ts';
import { giveLeaseBack } from './lease.ts';

/**
 * The map database this attempt started afresh (it replaced any older one) holds
 * nothing of value: it goes, and its state dir if nothing else is in it, so refused
 * peers leave no files behind.
 */
async function removeFreshMap(guest: Guest): Promise<void> {
  await Promise.all(['', '-wal', '-shm', '-journal'].map((ext) => rm(guest.dbPath + ext, { force: true })));
  await rmdir(dirname(guest.dbPath)).catch(() => {}); // not empty: someone else's files stay
}

export async function abort(s: DestinationSession, err: unknown): Promise<never> {
  const e = err as Error;
  s.log.debug({ code: codeOf(e), message: e.message }, 'incoming migration failed');
  await s.channel.send({ name: 'ERROR', body: { code: codeOf(e) ?? 'MIGRATE_FAILED', message: e.message } }).catch(() => {});
  s.channel.closeAfterError();
  if (s.storage) await s.storage.close().catch(() => {});
  const guest = s.guest ?? (s.starting ? await s.starting.catch(() => null) : null);
  if (guest) {
    await guest.stop().catch(() => {}); // never resumed: the source keeps the guest
    if (s.leased) await giveLeaseBack(s, guest).catch((e: Error) => s.log.error({ err: e.message }, "the disk's lease could not be given back"));
    await removeFreshMap(guest).catch(() => {});
  }
  // Prepared memory and threads that the handshake never took stay for the next peer (listener.ts).
  const tookReady = s.ready && s.memory;
  if (!guest && tookReady) await s.ready!.worker.terminate().catch(() => {});
  await (s.hasher ?? (tookReady ? s.ready!.hasher : null))?.close().catch(() => {});
  throw err;
}
