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
