/**
 * A failed source proxy: the destination hears why (an ERROR frame, best effort), and
 * QEMU's socket is closed at once, so QEMU's next write fails, it marks the migration
 * failed and resumes its guest. Returns the error to report.
 */
import { codeOf } from '../../errors.ts';
import type { SourceProxySession } from './session.ts';

export function failSource(s: SourceProxySession, err: unknown): Error {
  s.fail(err);
  const e = s.failure!;
  s.qemu?.destroy();
  tellDestination(s);
  s.log.error({ err: e }, 'migration failed');
  return e;
}

/** Sends the failure to the destination once, if the link is up (the handshake calls it too: a link made after the failure). */
export function tellDestination(s: SourceProxySession): void {
  const channel = s.channel;
  const e = s.failure;
  if (!channel || !e || s.told) return;
  s.told = true;
  channel
    .send({ name: 'ERROR', body: { code: codeOf(e) ?? 'MIGRATE_FAILED', message: e.message.slice(0, 4000) } })
    .catch(() => {})
    .finally(() => channel.close());
}

export async function cleanupSource(s: SourceProxySession): Promise<void> {
  s.stall.stop();
  s.batcher.stop();
  s.kept.clear();
  s.server?.close();
  s.index?.close();
  await s.hasher.close();
}
