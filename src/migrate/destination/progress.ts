/**
 * PROGRESS on the return path while pages arrive: the fetch backlog and the
 * digest hashing this side still owes, which the source counts in its downtime
 * estimate. Digests are refreshed only while the fetch queue is idle, never
 * while references land all over memory.
 */
import { PAGE_SIZE, PROGRESS_INTERVAL_MS } from '../../wire/index.ts';
import type { DestinationSession } from './session.ts';

export function startProgress(s: DestinationSession): NodeJS.Timeout {
  return setInterval(() => {
    s.digests.readDirty(s.memory.dirty);
    if (s.queue.idle) void s.digests.refresh();
    const st = s.queue.stats;
    const waiting = s.queue.backlog + s.queue.inFlightPages;
    s.backlog.max = Math.max(s.backlog.max, waiting);
    s.backlog.sum += waiting;
    s.backlog.samples++;
    // Referenced pages resolved per second while reads are outstanding: what the storage can
    // do (gaps read through, hashing and applying included), not how busy it was kept.
    const busy = s.queue.busyNowMs / 1000;
    const body = {
      refsReceived: s.received.refs, pending: waiting, applied: st.applied, bytesRead: st.bytesRead,
      readRate: busy > 0 && st.pagesResolved > 0 ? (st.pagesResolved * PAGE_SIZE) / busy : 0, verifyMs: s.digests.estimateMs(),
    };
    void s.channel.send({ name: 'PROGRESS', body }).catch(() => {});
  }, PROGRESS_INTERVAL_MS);
}
