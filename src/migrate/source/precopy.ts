/**
 * Source phase 2, pre-copy: round 0 sends every page, each later round the pages
 * dirtied since, while the guest runs. After each round the convergence policy
 * (convergence.ts) decides: stop and copy, wait for the settling work, iterate
 * again (throttling the guest if it must), or give up.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { LivemigError } from '../../errors.ts';
import { MAX_SEQ } from '../../wire/index.ts';
import type { PageSender, Sent } from './page-sender.ts';
import type { SourceSession } from './session.ts';

/**
 * Round 0's order, cold pages first: the pages written during the handshake (`hot`,
 * likely to be written again) go last, so fewer are written after they were sent.
 */
export function coldFirst(pages: number, hot: Uint32Array): Uint32Array {
  const out = new Uint32Array(pages);
  const isHot = new Uint8Array(pages);
  for (let i = 0; i < hot.length; i++) isHot[hot[i]] = 1;
  let n = 0;
  for (let p = 0; p < pages; p++) if (!isHot[p]) out[n++] = p;
  out.set(hot, n);
  return out;
}

const add = (a: Sent, b: Sent): Sent => ({ full: a.full + b.full, zero: a.zero + b.zero, ref: a.ref + b.ref, lz4: a.lz4 + b.lz4, xbzrle: a.xbzrle + b.xbzrle, bytes: a.bytes + b.bytes });

/**
 * One round: the pages (the last `hot` of them have their dirty bits cleared just
 * before they go), then those asked for in full; returns what went and how long it took.
 */
async function round(s: SourceSession, sender: PageSender, toSend: Uint32Array, hot = 0): Promise<{ sent: Sent; again: Sent; ms: number }> {
  const t0 = performance.now();
  sender.policy?.startRound(toSend);
  const retry = s.takeRequested();
  let sent = await sender.send(toSend.subarray(0, toSend.length - hot), true);
  if (hot) {
    s.takeDirtyOf(toSend.subarray(toSend.length - hot));
    sent = add(sent, await sender.send(toSend.subarray(toSend.length - hot), true));
  }
  const again = await sender.send(retry, false);
  return { sent, again, ms: performance.now() - t0 };
}

export async function precopy(s: SourceSession, sender: PageSender): Promise<void> {
  const hot = s.takeDirty(); // cleared first, so it records what changes during round 0
  void s.digests.refresh(); // from the start: a link-bound round 0 leaves the cores time for it
  let toSend = coldFirst(s.pages, hot);
  for (let n = 0; ; n++) {
    s.check();
    const { sent, again, ms } = await round(s, sender, toSend, n === 0 ? hot.length : 0);
    const bytes = sent.bytes + again.bytes;
    s.meter.record(bytes, ms);
    s.codecs.endRound();
    s.dirty = s.takeDirty();
    toSend = s.dirty;
    void s.digests.refresh(); // in the background: at pause only chunks written since need hashing
    // Round 0 sent every page, zero and referenced ones too: a page dirtied since will cost what a
    // full page did (else the estimate halves and the stop overruns the limit). Later rounds sent only dirtied pages.
    const full = sent.full + again.full;
    const perPage = n === 0 && full > 0 ? bytes / full : bytes / Math.max(1, full + sent.zero + sent.ref + again.zero);
    const linkMs = s.meter.estimateMs(s.dirty.length * perPage);
    // At pause both hosts finish their digests at once, the destination after its fetch backlog.
    const settleMs = Math.max(s.fetchBacklogMs() + s.heard.progress.verifyMs, s.digests.estimateMs());
    s.recordRound({
      round: n, pages: sent.full + sent.zero + sent.ref, full: sent.full + again.full, zero: sent.zero + again.zero, ref: sent.ref,
      lz4: sent.lz4 + again.lz4, xbzrle: sent.xbzrle + again.xbzrle, bytes, ms, dirtyAfter: s.dirty.length, estimatedDowntimeMs: linkMs + settleMs, throttle: s.convergence.throttle,
    });
    if (s.seq > MAX_SEQ - 2 * s.pages) return; // sequence numbers never wrap: stop while the last round still fits
    const d = s.convergence.next(n, linkMs, settleMs);
    if (d.action === 'stop') return;
    if (d.action === 'abort') {
      throw new LivemigError('MIGRATE_NOT_CONVERGED', `not converged after ${n + 1} rounds: ${s.dirty.length} pages dirty, estimated downtime ${Math.round(linkMs + settleMs)} ms > ${s.opts.downtimeLimitMs} ms`);
    }
    if (d.action === 'settle') await delay(d.waitMs);
    else if (d.throttle !== (await s.guest.status()).throttle) await s.guest.throttle(d.throttle);
  }
}
