/**
 * A failed destination proxy: the source proxy hears why (an ERROR frame, best effort;
 * it then fails its QEMU's migration, which resumes the guest there), and QEMU's
 * socket here is closed, so this QEMU abandons the incoming migration.
 */
import { codeOf } from '../../errors.ts';
import type { DestinationProxySession } from './session.ts';

export function failDestination(s: DestinationProxySession, err: unknown): Error {
  s.fail(err);
  const e = s.failure!;
  s.qemu?.destroy();
  const channel = s.channel;
  if (channel) {
    channel
      .send({ name: 'ERROR', body: { code: codeOf(e) ?? 'MIGRATE_FAILED', message: e.message.slice(0, 4000) } })
      .catch(() => {})
      .finally(() => channel.close());
  }
  s.log.error({ err: e }, 'migration failed');
  return e;
}

export async function cleanupDestination(s: DestinationProxySession): Promise<void> {
  s.stall.stop();
  s.server?.close();
  await s.storage?.close().catch(() => {});
  await s.hasher.close();
}
