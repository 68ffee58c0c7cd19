/**
 * `pagecache` — a file server. Files are read by Zipf popularity into a page
 * cache that fills most of memory (87 %); heap memory takes 10.5 %, and the
 * rest stays free and zero. Calibrated against a real Linux guest that has read
 * its files (DESIGN.md: 84 % of pages equal a disk block, 2.5 % zero). In steady
 * state it reads 4 files per 10 ms (mostly cache hits; misses evict the least
 * recently used files) and rewrites one heap page per step.
 */
import { anonFill } from './guest-os.ts';
import { fillAnon, warmCache, readPopular, zipfOverFiles } from './phases.ts';
import type { WorkloadFactory } from './workload.ts';

export const CACHE_SHARE = 0.87;
export const ANON_SHARE = 0.105;

export const pagecache: WorkloadFactory = (ctx, saved) => {
  let phase = (saved?.phase as string) ?? 'anon';
  const cursor = { next: (saved?.cursor as number) ?? 0 };
  let steps = (saved?.steps as number) ?? 0;
  ctx.os.cacheCapacity = Math.floor(ctx.memory.pages * CACHE_SHARE);
  const zipf = zipfOverFiles(ctx);
  return {
    name: 'pagecache',
    async step() {
      if (phase === 'anon') {
        if (await fillAnon(ctx, ANON_SHARE)) phase = 'warm';
        return 0;
      }
      if (phase === 'warm') {
        if (await warmCache(ctx, CACHE_SHARE, cursor)) phase = 'steady';
        return 0;
      }
      steps++;
      await readPopular(ctx, zipf, 4);
      const anon = ctx.os.anon;
      if (anon.length) ctx.os.rewriteAnon(anon[ctx.rng.int(anon.length)], anonFill(ctx.rng));
      return 10;
    },
    state: () => ({ phase, cursor: cursor.next, steps }),
    status: () => ({ phase, steps, ...ctx.os.stats }),
  };
};
