/**
 * The source proxy: stands where QEMU's migration goes (`migrate unix:PATH`), carries
 * its stream to the destination proxy with page-cache pages as block references, and
 * fails QEMU's migration (closing its socket) on any error, so QEMU resumes the guest.
 * One migration per run, phase by phase on one session (session.ts).
 */
import { LivemigError } from '../../errors.ts';
import { ContentIndexClient } from '../../storage/content-index/client.ts';
import { acceptQemu } from './accept.ts';
import { cleanupSource, failSource } from './failure.ts';
import { finish } from './finish.ts';
import { sampleDisk } from './handshake.ts';
import { sourceReport, type SourceProxyResult } from './report.ts';
import { SourceProxySession, type SourceProxyOptions } from './session.ts';
import { onRecord, onSealed, stream } from './stream.ts';
import { watchGc } from '../progress.ts';

export type { SourceProxyOptions } from './session.ts';
export type { SourceProxyResult } from './report.ts';

/** Before QEMU connects: the content index answers, and the disk's identity is sampled (again at the handshake under TLS, with the session's key). */
async function prepare(s: SourceProxySession): Promise<void> {
  if (s.opts.index) s.index = await ContentIndexClient.connect(s.opts.index.address, s.opts.index.exportName);
  await sampleDisk(s);
}

export async function runSourceProxy(opts: SourceProxyOptions, signal?: AbortSignal): Promise<SourceProxyResult> {
  watchGc();
  const s = new SourceProxySession(opts, { sealed: onSealed, record: onRecord });
  const onAbort = () => s.fail(new LivemigError('MIGRATE_CANCELLED', 'the source proxy was interrupted'));
  signal?.addEventListener('abort', onAbort);
  opts.progress?.(() => s.progress());
  try {
    await Promise.race([prepare(s), s.failed.promise]);
    await acceptQemu(s);
    s.stall.start();
    await stream(s);
    await finish(s);
    return sourceReport(s);
  } catch (err) {
    throw failSource(s, err);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await cleanupSource(s);
  }
}
