/**
 * The end of a source proxy's migration: QEMU closed a whole stream and every batch is
 * on the link, so QEMU_END states its length; the destination answers QEMU_DONE once it
 * has written all of it to its QEMU, in bounded time.
 */
import { LivemigError } from '../../errors.ts';
import { TIMEOUT } from '../../wire/index.ts';
import { timeout } from '../deferred.ts';
import type { SourceProxySession } from './session.ts';

export async function finish(s: SourceProxySession): Promise<void> {
  const channel = s.channel!;
  await channel.send({ name: 'QEMU_END', body: { streamBytes: s.streamBytes, refPages: s.kept.sent } });
  s.log.info({ streamBytes: s.streamBytes, refPages: s.kept.sent }, 'stream ended; waiting for the destination');
  const done = await Promise.race([
    s.done.promise,
    s.failed.promise,
    timeout(TIMEOUT.QEMU_DONE, () => new LivemigError('MIGRATE_TIMEOUT', `no QEMU_DONE from the destination proxy within ${TIMEOUT.QEMU_DONE} ms`)),
  ]);
  if (done.streamBytes !== s.streamBytes || done.refPages !== s.kept.sent) {
    throw new LivemigError('MIGRATE_PROTOCOL', `the destination wrote ${done.streamBytes} bytes with ${done.refPages} referenced pages; the stream had ${s.streamBytes} with ${s.kept.sent}`);
  }
  channel.close();
}
