/**
 * Source phase 4, verification: once the digests of memory at pause are settled
 * (their hashing overlapped the last sends), DIGESTS carries one per region. The
 * destination compares them with its own and resumes only if all are equal.
 */
import type { SourceSession } from './session.ts';

export async function verification(s: SourceSession): Promise<void> {
  await s.settling;
  await s.channel.send({ name: 'DIGESTS', body: { digests: s.digests.regionDigests(s.guest.memory.layout) } });
  s.digestsSent = true;
  s.log.debug({ chunksHashed: s.digests.hashedChunks }, 'digests sent');
}
