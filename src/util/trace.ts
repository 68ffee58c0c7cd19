/**
 * Phase tracing for downtime analysis, on stderr when LIVEMIG_TRACE is set. Each
 * line carries the wall clock (ms, last 5 digits) so that lines from the source
 * and the destination on one machine can be put in order.
 */
export function phaseTrace(tag: string): (what: string) => void {
  if (!process.env.LIVEMIG_TRACE) return () => {};
  const t0 = performance.now();
  return (what) => {
    const now = performance.now();
    console.error(`[${tag}] ${((performance.timeOrigin + now) % 100_000).toFixed(1)} +${(now - t0).toFixed(1)} ms ${what}`);
  };
}
