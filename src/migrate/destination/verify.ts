/**
 * Destination phase 4, verification: this side's memory digests, settled over
 * what it holds now, must equal the source's (DIGESTS), region by region.
 * docs/protocol.md says what this proves and what it does not.
 */
import { LivemigError } from '../../errors.ts';
import type { DestinationSession } from './session.ts';

export async function verify(s: DestinationSession): Promise<void> {
  s.setState('verifying');
  s.digests.readDirty(s.memory.dirty);
  await s.digests.settle();
  const mine = s.digests.regionDigests(s.memory.layout);
  await s.until(() => s.received.digests !== null);
  const theirs = s.received.digests!;
  const bad = mine.findIndex((d, i) => d !== theirs[i]);
  if (bad >= 0 || mine.length !== theirs.length) throw new LivemigError('MIGRATE_VERIFY_FAILED', `memory region ${bad} differs from the source after transfer`);
  s.log.debug({ chunksHashed: s.digests.hashedChunks }, 'verified');
}
