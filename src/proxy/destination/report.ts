/** What a destination proxy's migration did, as `livemig qemu-proxy --listen … --json` prints it. */
import type { FetchReport } from '../../wire/index.ts';
import { formatEndpoint } from '../endpoint.ts';
import { cpuMs, gcTime } from '../progress.ts';
import type { DestinationProxySession } from './session.ts';

export interface DestinationProxyResult {
  role: 'destination';
  listen: string;
  to: string;
  disk: string;
  /** Bytes of QEMU's stream written to QEMU, and bytes on the link between the proxies (both ways). */
  streamBytes: number;
  linkBytes: number;
  /** From the source proxy's connection to QEMU_DONE. */
  totalMs: number;
  /** CPU time of this process (all its threads, user + system) since the connection. */
  cpuMs: number;
  /** Garbage collection on the main thread since the proxy started: pause ms (of them mark-compact), collections. */
  gc: { ms: number; majorMs: number; externalMs: number; count: number };
  storageMatch: boolean;
  refPages: number;
  refRetried: number;
  fetchedBytes: number;
  qemuClosed: boolean;
  fetch: FetchReport;
}

export function fetchReport(s: DestinationProxySession): FetchReport {
  const st = s.fetch?.stats;
  if (!st) return { reads: 0, maxInFlight: 0, meanLatencyMs: 0, stale: 0, busyMs: 0, readRate: 0, maxBacklog: 0, meanBacklog: 0 };
  const round = (x: number) => Math.round(x * 10) / 10;
  return {
    reads: st.reads, maxInFlight: st.maxInFlight, meanLatencyMs: round(st.reads ? st.totalLatencyMs / st.reads : 0), stale: st.stale,
    busyMs: Math.round(st.busyMs), readRate: Math.round(st.busyMs > 0 ? (st.bytesRead / st.busyMs) * 1000 : 0),
    maxBacklog: s.backlog.max, meanBacklog: round(s.backlog.samples ? s.backlog.sum / s.backlog.samples : 0),
  };
}

export function destinationReport(s: DestinationProxySession): DestinationProxyResult {
  return {
    role: 'destination',
    listen: formatEndpoint(s.opts.listen),
    to: formatEndpoint(s.opts.to),
    disk: s.opts.disk,
    streamBytes: s.output?.written ?? 0,
    linkBytes: s.linkBytes,
    totalMs: Math.round(performance.now() - (s.tConnected || s.t0)),
    cpuMs: cpuMs() - s.cpuConnected,
    gc: { ms: Math.round(gcTime.ms), majorMs: Math.round(gcTime.majorMs), externalMs: Math.round(gcTime.externalMs), count: gcTime.count },
    storageMatch: s.storageMatch.match,
    refPages: s.slots?.received ?? 0,
    refRetried: s.slots?.retried ?? 0,
    fetchedBytes: s.fetch?.stats.bytesRead ?? 0,
    qemuClosed: s.qemuClosed,
    fetch: fetchReport(s),
  };
}
