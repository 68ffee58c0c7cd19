/**
 * Destination phase 5, switch-over: the map that travelled is restored, the
 * guest gets its device state and the disk (the source released it at pause)
 * and runs, or stays paused when held; RESUMED tells the source to let go.
 */
import type { Guest } from '../../guest/guest.ts';
import type { Resumed } from '../../wire/index.ts';
import type { DestinationSession } from './session.ts';

function report(s: DestinationSession): Resumed {
  const st = s.queue.stats;
  return {
    verified: true,
    running: !s.opts.hold,
    fetchedBytes: st.bytesRead,
    sampleBytes: s.storageCheck.bytes,
    refsApplied: st.applied,
    mapEntries: s.arriving.size,
    refRetried: st.mismatched,
    fetch: {
      reads: st.reads,
      maxInFlight: st.maxInFlight,
      meanLatencyMs: st.reads ? Math.round((st.totalLatencyMs / st.reads) * 100) / 100 : 0,
      stale: st.stale,
      busyMs: Math.round(st.busyMs),
      readRate: st.busyMs > 0 ? Math.round(st.bytesRead / (st.busyMs / 1000)) : 0,
      maxBacklog: s.backlog.max,
      meanBacklog: s.backlog.samples ? Math.round(s.backlog.sum / s.backlog.samples) : 0,
    },
    digestChunks: s.digests.hashedChunks,
  };
}

export async function resume(s: DestinationSession): Promise<Guest> {
  s.arriving.correct(s.received.corrections);
  s.arriving.restoreInto(s.map);
  await s.storage!.close();
  s.storage = null;
  const guest = await s.starting!;
  await guest.loadDevice(s.received.device!); // attaches the disk: the source released it at pause
  if (!s.opts.hold) await guest.resume();
  s.setState(s.opts.hold ? 'paused' : 'running');
  await s.channel.send({ name: 'RESUMED', body: report(s) });
  s.log.info({ running: !s.opts.hold }, 'guest arrived');
  s.channel.close();
  void s.hasher!.close();
  return guest;
}
