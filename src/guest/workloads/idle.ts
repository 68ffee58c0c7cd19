/**
 * `idle` — a guest that has warmed its page cache and now mostly waits: the same
 * memory mix as `pagecache`, then one file read and one heap page written per
 * 100 ms (about 40 KB/s of memory writes). The easy case for pre-copy.
 */
import { anonFill } from './guest-os.ts';
import { fillAnon, warmCache, readPopular, zipfOverFiles } from './phases.ts';
import { CACHE_SHARE, ANON_SHARE } from './pagecache.ts';
import type { WorkloadFactory } from './workload.ts';

export const idle: WorkloadFactory = (ctx, saved) => {
  let phase = (saved?.phase as string) ?? 'anon';
  const cursor = { next: (saved?.cursor as number) ?? 0 };
  let steps = (saved?.steps as number) ?? 0;
  ctx.os.cacheCapacity = Math.floor(ctx.memory.pages * CACHE_SHARE);
  const zipf = zipfOverFiles(ctx);
  return {
    name: 'idle',
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
      await readPopular(ctx, zipf, 1);
      const anon = ctx.os.anon;
      if (anon.length) ctx.os.rewriteAnon(anon[ctx.rng.int(anon.length)], anonFill(ctx.rng));
      return 100;
    },
    state: () => ({ phase, cursor: cursor.next, steps }),
    status: () => ({ phase, steps, ...ctx.os.stats }),
  };
};
