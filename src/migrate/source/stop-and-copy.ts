/**
 * Source phase 3, stop-and-copy: pause the guest at a safe point (its disk
 * flushed, so write mappings are referenceable), hand the disk over, send the
 * pages dirtied since the last round, the p2b map corrections and the device
 * state, then COMPLETE. The guest stays paused here, memory untouched, until the
 * destination says it has it.
 */
import { NO_BLOCK } from '../../p2b/map.ts';
import { MAP_NO_BLOCK, encodeMap, type MapCorrections } from '../../wire/index.ts';
import type { PageSender } from './page-sender.ts';
import type { SourceSession } from './session.ts';

/**
 * The destination's map starts from the references it verified; a block written
 * after its fetch, or a mapping made since, would leave it wrong. These are the
 * pages whose mapping at pause differs from the last reference sent.
 */
function mapCorrections(s: SourceSession): MapCorrections {
  const { map } = s.guest;
  let n = 0;
  const pages = new Uint32Array(s.pages);
  const blocks = new Uint32Array(s.pages);
  for (let p = 0; p < s.pages; p++) {
    const want = map.referenceable(p) ? map.block[p] : NO_BLOCK;
    if (want === s.lastRef[p]) continue;
    pages[n] = p;
    blocks[n++] = want === NO_BLOCK ? MAP_NO_BLOCK : want;
  }
  return { pages: pages.subarray(0, n), blocks: blocks.subarray(0, n) };
}

export async function stopAndCopy(s: SourceSession, sender: PageSender): Promise<void> {
  s.tPause = performance.now();
  await s.guest.pause();
  s.paused = true;
  await s.guest.detachDisk(); // the destination is the disk's one writer from its resume on
  s.detached = true;
  s.log.debug('paused, disk detached');
  const retry = s.takeRequested();
  const last = new Set<number>([...s.takeDirty(), ...s.dirty]);
  s.untrackedWriteForTest();
  for (const p of retry) last.delete(p);
  const list = Uint32Array.from(last);
  sender.policy?.startRound(list); // references here lengthen the downtime by the storage reads
  const fin = await sender.send(list, true);
  const again = await sender.send(retry, false); // a page whose reference failed goes in full
  s.recordRound({
    round: s.rounds.length, pages: last.size, full: fin.full + again.full, zero: fin.zero + again.zero, ref: fin.ref,
    lz4: fin.lz4 + again.lz4, xbzrle: fin.xbzrle + again.xbzrle,
    bytes: fin.bytes + again.bytes, ms: performance.now() - s.tPause, dirtyAfter: 0, estimatedDowntimeMs: 0, throttle: s.convergence.throttle,
  });
  s.settling = s.digests.settle(); // memory is still now: hash what changed while the rest goes out
  if (s.useRefs) await s.channel.send({ name: 'MAP', body: encodeMap(mapCorrections(s)) });
  await s.channel.send({ name: 'DEVICE_STATE', body: await s.guest.deviceStateBytes() });
  await s.channel.send({ name: 'COMPLETE', body: { lastSeq: s.seq } });
  s.log.debug({ lastSeq: s.seq }, 'complete sent');
}
