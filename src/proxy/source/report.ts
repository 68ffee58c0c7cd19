/** What a source proxy's migration did, as `livemig qemu-proxy --json` prints it. */
import type { FetchReport } from '../../wire/index.ts';
import { formatEndpoint } from '../endpoint.ts';
import { cpuMs, gcTime } from '../progress.ts';
import type { SourceProxySession } from './session.ts';

export interface SourceProxyResult {
  role: 'source';
  from: string;
  to: string;
  machine: string;
  /** QEMU's RAM blocks, in bytes. */
  ramBytes: number;
  /** Bytes of QEMU's stream carried, and bytes on the link between the proxies (both ways). */
  streamBytes: number;
  linkBytes: number;
  /** From QEMU's connection to the destination's QEMU_DONE. */
  totalMs: number;
  /** CPU time of this process (all its threads, user + system) since the connection. */
  cpuMs: number;
  /** Garbage collection on the main thread since the proxy started: pause ms (of them mark-compact), collections. */
  gc: { ms: number; majorMs: number; externalMs: number; count: number };
  maxBandwidth: number;
  references: boolean;
  storageMatch: boolean;
  storageReason?: string;
  pages: { ref: number; full: number; zero: number };
  refRuns: number;
  refRetried: number;
  /** Batches of QEMU's stream (up to 512 pages each) classified and sent. */
  batches: number;
  destination: { fetchedBytes: number; refRetried: number; qemuClosed: boolean; fetch: FetchReport };
}

export function sourceReport(s: SourceProxySession): SourceProxyResult {
  const done = s.done.settled ? s.doneValue : null;
  return {
    role: 'source',
    from: formatEndpoint(s.opts.from),
    to: `tcp://${s.opts.to.host}:${s.opts.to.port}`,
    machine: s.machine,
    ramBytes: s.ramBlocks.reduce((n, b) => n + b.bytes, 0),
    streamBytes: s.streamBytes,
    linkBytes: s.linkBytes,
    totalMs: Math.round(performance.now() - (s.tConnected || s.t0)),
    cpuMs: cpuMs() - s.cpuConnected,
    gc: { ms: Math.round(gcTime.ms), majorMs: Math.round(gcTime.majorMs), externalMs: Math.round(gcTime.externalMs), count: gcTime.count },
    maxBandwidth: s.opts.maxBandwidth,
    references: s.useRefs,
    storageMatch: s.storage.match,
    ...(s.storage.reason ? { storageReason: s.storage.reason } : {}),
    pages: { ref: s.counts.ref, full: s.counts.full, zero: s.counts.zero },
    refRuns: s.counts.refRuns,
    refRetried: s.counts.refRetried,
    batches: s.batcher.sealed,
    destination: done
      ? { fetchedBytes: done.fetchedBytes, refRetried: done.refRetried, qemuClosed: done.qemuClosed, fetch: done.fetch }
      : { fetchedBytes: 0, refRetried: 0, qemuClosed: false, fetch: { reads: 0, maxInFlight: 0, meanLatencyMs: 0, stale: 0, busyMs: 0, readRate: 0, maxBacklog: 0, meanBacklog: 0 } },
  };
}
