/** The workload profiles by name. */
import type { WorkloadFactory } from './workload.ts';
import { idle } from './idle.ts';
import { pagecache } from './pagecache.ts';
import { dirty } from './dirty.ts';
import { diskwrite } from './diskwrite.ts';
import { mixed } from './mixed.ts';

export const WORKLOADS: Record<string, { factory: WorkloadFactory; summary: string; writeShare: number }> = {
  idle: { factory: idle, summary: 'warm page cache, rare writes', writeShare: 0 },
  pagecache: { factory: pagecache, summary: 'file server: Zipf-popular files fill the page cache', writeShare: 0 },
  dirty: { factory: dirty, summary: 'heap rewritten at --dirty-rate', writeShare: 0 },
  diskwrite: { factory: diskwrite, summary: 'fresh data written out at --write-rate, with overwrites', writeShare: 0.25 },
  mixed: { factory: mixed, summary: 'database: buffer pool reads, in-memory updates, log and writeback', writeShare: 0.1 },
};

export const WORKLOAD_NAMES = Object.keys(WORKLOADS);
