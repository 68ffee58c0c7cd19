/** What a migration reports (the demo's --json and `livemig migrate --json`). */
export type Strategy = 'baseline' | 'p2b';
export const STRATEGIES: Strategy[] = ['baseline', 'p2b'];

export interface RoundStats {
  round: number;
  pages: number;
  full: number;
  zero: number;
  ref: number;
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
  verified: boolean;
  totalTimeMs: number;
  downtimeMs: number;
  rounds: number;
  linkBytes: number;
  nasBytes: number;
  pages: { full: number; zero: number; ref: number; refRetried: number };
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
  /** CPU time of each agent's process (all threads, its guest's included) over the migration. */
  cpu: { sourceMs: number; destinationMs: number };
  /** Peak resident memory of each agent's process. */
  peakRss: { source: number; destination: number };
  /** Memory digest chunks (64 KiB) hashed on each side, over the whole migration. */
  digestChunks: { source: number; destination: number };
}

/** The destination's fetch queue over the migration. */
export interface FetchReport {
  reads: number;
  maxInFlight: number;
  meanLatencyMs: number;
  stale: number;
  /** Time with a read outstanding, and the storage read rate within it (bytes/s). */
  busyMs: number;
  readRate: number;
  /** References waiting to be read, sampled every 50 ms. */
  maxBacklog: number;
  meanBacklog: number;
}

export interface ResumedReport {
  verified: true;
  /** False when the destination holds the guest paused (hold, QEMU's -S). */
  running: boolean;
  fetchedBytes: number;
  sampleBytes: number;
  refsApplied: number;
  mapEntries: number;
  refRetried: number;
  fetch: FetchReport;
  cpuMs: number;
  peakRss: number;
  digestChunks: number;
}
