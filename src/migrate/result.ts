/** What a migration reports (`livemig migrate --json`, the demo, the benchmark). */
import type { FetchReport } from '../wire/index.ts';

/** auto: references only where they finish sooner (the default); p2b: every mapped page as one; baseline: none. */
export type Strategy = 'auto' | 'baseline' | 'p2b';
export const STRATEGIES: Strategy[] = ['auto', 'baseline', 'p2b'];

export interface RoundStats {
  round: number;
  pages: number;
  full: number;
  zero: number;
  ref: number;
  /** Of `full`, pages that went LZ4-compressed or as XBZRLE deltas. */
  lz4: number;
  xbzrle: number;
  bytes: number;
  ms: number;
  dirtyAfter: number;
  estimatedDowntimeMs: number;
  throttle: number;
}

export interface MigrationResult {
  strategy: Strategy;
  workload: string;
  memoryBytes: number;
  /** The engine's check passed: the destination's keyed memory digests equal the source's. */
  verified: boolean;
  /** False when the destination holds the guest paused (run --incoming --paused). */
  destinationRunning: boolean;
  totalTimeMs: number;
  /** From the pause here to the destination's word that the guest is there (running or held). */
  downtimeMs: number;
  rounds: number;
  linkBytes: number;
  /** Bytes the network carried for the link, both ways: linkBytes plus TLS records and handshake (equal on a plain link but for nothing). */
  wireBytes: number;
  nasBytes: number;
  /** `full` counts every page sent as bytes; `lz4` and `xbzrle` those of them that went compressed or as deltas. */
  pages: { full: number; zero: number; ref: number; refRetried: number; lz4: number; xbzrle: number };
  /** What the page codecs did (page-codecs.ts): bytes kept off the link, and why XBZRLE stopped if it did. */
  codecs: { savedBytes: number; xbzrleOff: string | null; lz4Used: boolean };
  storageMatch: boolean;
  storageReason?: string;
  /** p2b map entries the destination started with (pages that arrived as verified references). */
  mapEntries: number;
  downtimeLimitMs: number;
  maxBandwidth: number;
  averageBandwidth: number;
  finalThrottle: number;
  roundStats: RoundStats[];
  fetch: FetchReport;
  /** Memory digest chunks (64 KiB) hashed on each side, over the whole migration. */
  digestChunks: { source: number; destination: number };
}
