/**
 * The shape `pagecache` and `idle` share: warm the page cache (87 %) beside
 * 10.5 % heap, then per period read some files by Zipf popularity and rewrite
 * one heap page. Calibrated against a real Linux guest that has read its files
 * (DESIGN.md: 84 % of pages equal a disk block, 2.5 % zero).
 */
import { anonFill } from './guest-os.ts';
import { WarmUp, readPopular, zipfOverFiles } from './phases.ts';
import type { WorkloadFactory } from './workload.ts';

export const CACHE_SHARE = 0.87;
export const ANON_SHARE = 0.105;

export function fileReader(name: string, filesPerStep: number, periodMs: number, zipfExponent = 1.1): WorkloadFactory {
  return (ctx, saved) => {
    const warm = new WarmUp(ctx, ANON_SHARE, CACHE_SHARE, saved);
    let steps = (saved?.steps as number) ?? 0;
    ctx.os.cacheCapacity = Math.floor(ctx.memory.pages * CACHE_SHARE);
    const zipf = zipfOverFiles(ctx, zipfExponent);
    return {
      name,
      async step() {
        if (!warm.done) return (await warm.step(), 0);
        steps++;
        await readPopular(ctx, zipf, filesPerStep);
        const anon = ctx.os.anon;
        if (anon.length) ctx.os.rewriteAnon(anon[ctx.rng.int(anon.length)], anonFill(ctx.rng));
        return periodMs;
      },
      state: () => ({ ...warm.state(), steps }),
      status: () => ({ phase: warm.phase, steps, ...ctx.os.stats }),
    };
  };
}
