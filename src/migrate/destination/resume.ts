/**
 * Destination phase 5, switch-over: the map that travelled is restored, the
 * guest gets its device state and the disk (the source released it at pause),
 * RESUMED tells the source to let go, and only then does the guest run (or stay
 * paused when held). A source that gave up before this point (its link is gone)
 * has resumed its own copy: then nothing starts here. If RESUMED cannot be sent,
 * the guest here has not run a single step and is stopped. Where the disk has a
 * lease (lease.ts), taking it decides instead: from then on the guest runs here,
 * link or no link, and a source that did not hear RESUMED finds the lease gone.
 */
import type { Guest } from '../../guest/guest.ts';
import type { Resumed } from '../../wire/index.ts';
import type { DestinationSession } from './session.ts';
import { takeLease } from './lease.ts';

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
  if (s.hello.lease) await takeLease(s, guest); // the commit point: a link lost after it changes nothing
  else s.throwIfFailed();
  await guest.loadDevice(s.received.device!); // attaches the disk: the source released it at pause
  if (!s.leased) s.throwIfFailed();
  await s.channel.send({ name: 'RESUMED', body: report(s) }).catch((err: Error) => {
    if (!s.leased) throw err;
    s.log.warn({ err: err.message }, 'RESUMED not sent; this side holds the lease, so the guest runs here and the source lets go');
  });
  if (!s.opts.hold) await guest.resume();
  s.setState(s.opts.hold ? 'paused' : 'running');
  s.log.info({ running: !s.opts.hold }, 'guest arrived');
  s.channel.close();
  return guest; // the listener closes the hashing threads once the guest is handed over
}
