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
  fetch: { reads: number; maxInFlight: number; meanLatencyMs: number; stale: number };
}

export interface ResumedReport {
  verified: true;
  fetchedBytes: number;
  sampleBytes: number;
  refsApplied: number;
  mapEntries: number;
  refRetried: number;
  reads: number;
  maxInFlight: number;
  meanLatencyMs: number;
  stale: number;
}
