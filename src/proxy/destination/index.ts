/**
 * The destination proxy: waits for a source proxy, rebuilds QEMU's exact stream from
 * what comes over the link and from the shared disk (references read by the fetch
 * queue and checked against their keyed hash), and feeds it to QEMU started with
 * `-incoming`. One migration per run, phase by phase on one session (session.ts).
 */
import { LivemigError } from '../../errors.ts';
import { acceptSource } from './accept.ts';
import { cleanupDestination, failDestination } from './failure.ts';
import { finish } from './finish.ts';
import { handshake } from './handshake.ts';
import { receive } from './receive.ts';
import { destinationReport, type DestinationProxyResult } from './report.ts';
import { DestinationProxySession, type DestinationProxyOptions } from './session.ts';
import { watchGc } from '../progress.ts';

export type { DestinationProxyOptions } from './session.ts';
export type { DestinationProxyResult } from './report.ts';

export async function runDestinationProxy(opts: DestinationProxyOptions, signal?: AbortSignal): Promise<DestinationProxyResult> {
  watchGc();
  const s = new DestinationProxySession(opts);
  const onAbort = () => s.fail(new LivemigError('MIGRATE_CANCELLED', 'the destination proxy was interrupted'));
  signal?.addEventListener('abort', onAbort);
  opts.progress?.(() => s.progress());
  try {
    await acceptSource(s);
    s.stall.start();
    await Promise.race([handshake(s), s.failed.promise]);
    await receive(s);
    await finish(s);
    return destinationReport(s);
  } catch (err) {
    throw failDestination(s, err);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await cleanupDestination(s);
  }
}
