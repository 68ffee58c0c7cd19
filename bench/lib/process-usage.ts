/** CPU time and peak memory of a process, read from outside through /proc (Linux). */
import { readFileSync } from 'node:fs';

/** CPU time (ms) and peak resident memory (bytes) of a process so far; null once it is gone. */
export function processUsage(pid: number): { cpuMs: number; peakRss: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]); // utime, stime in USER_HZ (100 on Linux)
    const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { cpuMs: ticks * 10, peakRss: hwm ? Number(hwm[1]) * 1024 : 0 };
  } catch {
    return null;
  }
}

export interface Usage {
  cpuMs: number;
  peakRss: number;
}

/** CPU used by each process between start() and stop(), and its peak memory at stop(). */
export class ProcessMeter<K extends string> {
  private start0: Partial<Record<K, number>> = {};
  start(pids: Record<K, number>): void {
    for (const k of Object.keys(pids) as K[]) this.start0[k] = processUsage(pids[k])?.cpuMs ?? NaN;
  }
  stop(pids: Record<K, number>): Record<K, Usage> {
    const out = {} as Record<K, Usage>;
    for (const k of Object.keys(pids) as K[]) {
      const u = processUsage(pids[k]);
      out[k] = { cpuMs: (u?.cpuMs ?? NaN) - (this.start0[k] ?? NaN), peakRss: u?.peakRss ?? NaN };
    }
    return out;
  }
}
