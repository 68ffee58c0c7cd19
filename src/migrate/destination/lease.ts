/**
 * The disk's lease at the switch-over (docs/protocol.md, "Disk leases"): where
 * the source said it holds one, the destination moves it to its own guest in one
 * atomic step on the storage before it resumes. That step is the commit point:
 * from it on the guest is this side's, whatever becomes of the link; a source
 * that gave up first renewed the lease, and then the step fails here.
 */
import { LivemigError } from '../../errors.ts';
import type { Guest } from '../../guest/guest.ts';
import { handOverLease, queryLease } from '../../storage/disk-lease.ts';
import type { DestinationSession } from './session.ts';

export async function takeLease(s: DestinationSession, guest: Guest): Promise<void> {
  const from = s.hello.lease!;
  const disk = guest.config.disk;
  const state = await handOverLease(disk, from, guest.leaseToken).catch((e: Error) => {
    throw new LivemigError('MIGRATE_LEASE', `cannot take the disk's lease at ${disk}: ${e.message}; the source keeps the guest`);
  });
  if (!state) throw new LivemigError('MIGRATE_LEASE', `${disk} grants no leases here, so the source's lease cannot be taken over; the source keeps the guest`);
  if (!state.granted) {
    const who = state.holder === null ? 'nobody' : state.holder === from.token ? 'the source' : 'another guest';
    throw new LivemigError('MIGRATE_LEASE', `the disk's lease is held by ${who} at epoch ${state.epoch}, not by the source at epoch ${from.epoch} (the source gave up and kept the guest)`);
  }
  s.leased = true;
  s.log.info({ epoch: state.epoch }, "took the disk's lease");
}

/** A switch-over that failed after the lease moved here gives it back, so the source can resume. */
export async function giveLeaseBack(s: DestinationSession, guest: Guest): Promise<void> {
  const disk = guest.config.disk;
  const now = await queryLease(disk);
  if (now?.holder !== guest.leaseToken) return;
  const back = await handOverLease(disk, { token: guest.leaseToken, epoch: now.epoch }, s.hello.lease!.token);
  s.log.warn({ granted: back?.granted }, "gave the disk's lease back to the source");
}
