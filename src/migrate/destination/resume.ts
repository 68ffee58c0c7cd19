/**
 * Destination phase 5, switch-over: the map that travelled is restored, the
 * guest gets its device state and the disk (the source released it at pause),
 * RESUMED tells the source to let go, and only then does the guest run (or stay
 * paused when held). A source that gave up before this point (its link is gone)
 * has resumed its own copy: then nothing starts here. If RESUMED cannot be sent,
 * the guest here has not run a single step and is stopped; see docs/protocol.md,
 * "Known gap", for a RESUMED lost after it was sent.
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
  s.throwIfFailed();
  await guest.loadDevice(s.received.device!); // attaches the disk: the source released it at pause
  s.throwIfFailed();
  await s.channel.send({ name: 'RESUMED', body: report(s) });
  if (!s.opts.hold) await guest.resume();
  s.setState(s.opts.hold ? 'paused' : 'running');
  s.log.info({ running: !s.opts.hold }, 'guest arrived');
  s.channel.close();
  void s.hasher!.close();
  return guest;
}
