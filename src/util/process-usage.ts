/** CPU time and peak memory: of this process, or of another one through /proc (Linux). */
import { readFileSync } from 'node:fs';

/** CPU time (user + system, all threads) this process used since `start`, in ms. */
export function cpuMsSince(start: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(start);
  return Math.round((u.user + u.system) / 1000);
}

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
