/**
 * The end of a destination proxy's migration: everything QEMU_END announced went to
 * QEMU (the byte and reference counts must agree), QEMU's socket is ended, and QEMU,
 * having read its stream to the end, closes its side (bounded wait). QEMU_DONE then
 * tells the source proxy, which lets its QEMU complete... it already did: precopy
 * without a return path completes on the source once its last byte is written.
 */
import { once } from 'node:events';
import { LivemigError } from '../../errors.ts';
import type { QemuDone } from '../../wire/index.ts';
import { timeout } from '../deferred.ts';
import { fetchReport } from './report.ts';
import type { DestinationProxySession } from './session.ts';

/** How long QEMU may take to load the end of its stream (device state) and close its side. */
const QEMU_CLOSE_MS = 30_000;

export async function finish(s: DestinationProxySession): Promise<void> {
  const end = s.end!;
  const output = s.output!;
  if (output.written !== end.streamBytes || s.slots!.received !== end.refPages) {
    throw new LivemigError('MIGRATE_PROTOCOL', `QEMU_END announced ${end.streamBytes} bytes with ${end.refPages} referenced pages; ${output.written} bytes with ${s.slots!.received} arrived`);
  }
  const qemu = s.qemu!;
  qemu.end();
  const closed = s.qemuClosed ? Promise.resolve() : once(qemu, 'close').then(() => undefined);
  const tooLong = timeout(QEMU_CLOSE_MS, () => new Error('slow'));
  await Promise.race([closed, tooLong, s.failed.promise]).catch((e) => {
    if (e === s.failure) throw e;
    s.log.warn(`QEMU did not close its migration socket within ${QEMU_CLOSE_MS} ms`);
  });
  const done: QemuDone = {
    streamBytes: output.written, refPages: s.slots!.received, refRetried: s.slots!.retried,
    fetchedBytes: s.fetch!.stats.bytesRead, qemuClosed: s.qemuClosed, fetch: fetchReport(s),
  };
  await s.channel!.send({ name: 'QEMU_DONE', body: done });
  s.channel!.close();
}
