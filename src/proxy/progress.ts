import { PerformanceObserver, constants } from 'node:perf_hooks';
/** What a proxy shows while it runs (the command prints it on a terminal). */
export interface ProxyProgress {
  phase: 'waiting' | 'migrating' | 'finishing';
  /** Bytes of QEMU's stream through this proxy so far, and on the link. */
  streamBytes: number;
  linkBytes: number;
  /** Pages sent (source) or received (destination) as references. */
  refPages: number;
}

/** Hands the caller a way to read progress whenever it likes. */
export type ProgressHook = (read: () => ProxyProgress) => void;

/** This process's CPU time (every thread), user + system, in ms. */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return Math.round((u.user + u.system) / 1000);
}

/** Garbage collection on the main thread since watchGc(): pauses in ms (major: mark-compact; external: forced by ArrayBuffer memory) and how many. */
export const gcTime = { ms: 0, majorMs: 0, count: 0, externalMs: 0 };
let gcObserver: PerformanceObserver | null = null;

/** Starts counting garbage collection (once per process): the reports give it next to the CPU time. */
export function watchGc(): void {
  gcObserver ??= new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcTime.ms += e.duration;
      gcTime.count++;
      const detail = (e as unknown as { detail?: { kind?: number; flags?: number } }).detail;
      if (detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcTime.majorMs += e.duration;
      if ((detail?.flags ?? 0) & constants.NODE_PERFORMANCE_GC_FLAGS_ALL_EXTERNAL_MEMORY) gcTime.externalMs += e.duration;
    }
  });
  gcObserver.observe({ entryTypes: ['gc'] });
}
