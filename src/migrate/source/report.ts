/** The migration's result, from the session and the destination's RESUMED. */
import type { Resumed } from '../../wire/index.ts';
import type { MigrationResult } from '../result.ts';
import type { SourceSession } from './session.ts';

export function report(s: SourceSession, r: Resumed): MigrationResult {
  const tEnd = performance.now();
  const pages = { full: 0, zero: 0, ref: 0, refRetried: s.refRetried, lz4: 0, xbzrle: 0 };
  for (const x of s.rounds) {
    pages.full += x.full;
    pages.zero += x.zero;
    pages.ref += x.ref;
    pages.lz4 += x.lz4;
    pages.xbzrle += x.xbzrle;
  }
  const c = s.codecs.report;
  return {
    strategy: s.opts.strategy,
    workload: s.guest.config.workload,
    memoryBytes: s.guest.memory.memoryBytes,
    verified: r.verified,
    destinationRunning: r.running,
    totalTimeMs: Math.round(tEnd - s.t0),
    downtimeMs: Math.round(tEnd - s.tPause),
    rounds: s.rounds.length,
    linkBytes: s.channel.bytesSent + s.channel.bytesReceived,
    wireBytes: s.channel.wireBytes,
    nasBytes: r.fetchedBytes + r.sampleBytes,
    pages,
    codecs: { savedBytes: c.savedBytes, xbzrleOff: c.xbzrleOff, lz4Used: c.lz4Used },
    storageMatch: s.storage.match,
    mapEntries: r.mapEntries,
    ...(s.storage.reason ? { storageReason: s.storage.reason } : {}),
    downtimeLimitMs: s.opts.downtimeLimitMs,
    maxBandwidth: s.opts.maxBandwidth,
    averageBandwidth: Math.round(s.meter.average()),
    finalThrottle: s.convergence.throttle,
    roundStats: s.rounds,
    fetch: r.fetch,
    digestChunks: { source: s.digests.hashedChunks, destination: r.digestChunks },
  };
}
