/**
 * Destination phase 2, receiving: one reader takes the source's frames for the
 * whole session (pages answering our requests may come after COMPLETE). Full and
 * zero pages land in memory, references go to the fetch queue; each page version
 * lands only if it is the newest (PageVersions). Frames must come in the order
 * docs/protocol.md gives: after COMPLETE only PAGES and DIGESTS.
 */
import { LivemigError } from '../../errors.ts';
import { ENCODING, decodeMap, decodePages, encodePageRequest, lz4Decompress, peerError, xbzrleDecode, PAGE_SIZE, type PageEntry } from '../../wire/index.ts';
import { HashPool } from '../hash-pool.ts';
import { MemoryDigests } from '../memory-digests.ts';
import { FetchQueue, FETCH_DEFAULTS } from '../fetch-queue.ts';
import { PageVersions } from './page-versions.ts';
import { ArrivingMap } from './arriving-map.ts';
import { MemoryTarget } from './memory-target.ts';
import { startProgress } from './progress.ts';
import type { DestinationSession } from './session.ts';

/** Asks the source for pages in full (their reference failed, or this side cannot resolve it). */
function requestFull(s: DestinationSession, pages: number[]): void {
  s.versions.requested(pages);
  void s.channel.send({ name: 'PAGE_REQUEST', body: encodePageRequest(pages) }).catch(() => {});
}

function applyRef(s: DestinationSession, e: Extract<PageEntry, { block: number }>): void {
  for (let i = 0; i < e.count; i++) s.versions.accept(e.page + i, e.seq + i);
  s.received.refs += e.count;
  if ((e.block + e.count) * PAGE_SIZE > s.storage!.size) throw new LivemigError('MIGRATE_PROTOCOL', `reference to block ${e.block} past the end of the disk`);
  if (s.storageCheck.sameSize) s.queue.add(e.page, e.block, e.hash, e.seq, e.count);
  else requestFull(s, Array.from({ length: e.count }, (_, i) => e.page + i));
}

const deltaScratch = Buffer.allocUnsafe(PAGE_SIZE);

/** Applies an XBZRLE delta to the page held here; a malformed delta throws before memory changes. */
function applyDelta(s: DestinationSession, page: number, delta: Uint8Array): void {
  deltaScratch.set(s.memory.page(page));
  xbzrleDecode(delta, deltaScratch);
  s.memory.setPage(page, deltaScratch);
}

function applyPages(s: DestinationSession, payload: Buffer): void {
  decodePages(payload, s.pages, (e) => {
    if ('block' in e) return applyRef(s, e);
    const baseHeld = 'delta' in e && s.versions.isCurrent(e.page, e.baseSeq);
    if (!s.versions.accept(e.page, e.seq)) return; // an older version overtaken by a newer one
    if ('data' in e) s.memory.setPage(e.page, e.data);
    else if ('compressed' in e) s.memory.setPage(e.page, lz4Decompress(e.compressed));
    else if ('delta' in e) {
      if (!baseHeld) return requestFull(s, [e.page]); // not made against what this side holds: ask for the bytes
      applyDelta(s, e.page, e.delta);
    }
    else if (e.encoding === ENCODING.ZERO) s.memory.zeroPage(e.page);
    else return requestFull(s, [e.page]); // an encoding this side does not know: ask for the bytes
    s.arriving.replaced(e.page);
  });
}

function startReader(s: DestinationSession): void {
  s.channel.only(['PAGES', 'DEVICE_STATE', 'MAP', 'COMPLETE']);
  void (async () => {
    for (;;) {
      const m = await s.channel.read();
      if (m.name === 'PAGES') applyPages(s, m.body);
      else if (m.name === 'DEVICE_STATE') s.received.device = m.body;
      else if (m.name === 'MAP') s.received.corrections = decodeMap(m.body, s.pages);
      else if (m.name === 'COMPLETE') {
        s.received.complete = true;
        s.channel.only(['PAGES', 'DIGESTS']);
      } else if (m.name === 'DIGESTS') s.received.digests = m.body.digests;
      else if (m.name === 'ERROR') throw peerError(m.body, 'source');
      s.notify();
    }
  })().catch((e: Error) => {
    s.received.failure = e;
    s.notify();
  });
}

export async function receive(s: DestinationSession): Promise<void> {
  s.setState('receiving');
  s.hasher = s.ready?.hasher ?? new HashPool(null, s.memory.shared());
  s.hasher.setKey(s.key);
  // Kept current from this side's dirty log (every page applied marks it), so that
  // after COMPLETE only the last pages' chunks need hashing.
  s.digests = new MemoryDigests(s.hasher, s.pages, s.key, true);
  s.versions = new PageVersions(s.pages);
  s.arriving = new ArrivingMap(s.pages);
  s.target = new MemoryTarget(s.memory, s.versions, s.arriving, (pages) => requestFull(s, pages), s.opts.faults);
  s.queue = new FetchQueue(s.storage!, s.hasher, s.target, { ...FETCH_DEFAULTS, ...s.opts.fetch });
  startReader(s);
  const progress = startProgress(s);
  try {
    await s.until(() => s.received.complete);
  } finally {
    clearInterval(progress);
  }
  s.log.debug({ refs: s.received.refs }, 'complete received');
}
