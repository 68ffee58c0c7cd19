/**
 * `dirty` — a compute job rewriting its heap: 45 % page cache, 50 % heap, and
 * heap pages dirtied at `--dirty-rate` (default 32 MiB/s of pages), 80 % of them
 * in a hot fifth of the heap. Models the guest that keeps pre-copy from
 * converging unless it is throttled. Each dirtied page gets one write of
 * `--write-size` bytes (default: the whole page) of `--heap` content (default
 * random), so the same rate dirties the same pages whatever the write size.
 */
import { PAGE_SIZE } from '../layout.ts';
import { heapWrite } from './heap.ts';
import { WarmUp } from './phases.ts';
import type { WorkloadFactory } from './workload.ts';

export const DEFAULT_DIRTY_RATE = 32 * 1024 * 1024;
const STEP_MS = 10;

export const dirty: WorkloadFactory = (ctx, saved) => {
  const warm = new WarmUp(ctx, 0.5, 0.45, saved);
  let steps = (saved?.steps as number) ?? 0;
  let pagesWritten = (saved?.pagesWritten as number) ?? 0;
  const rate = ctx.options.dirtyRate ?? DEFAULT_DIRTY_RATE;
  const heap = ctx.options.heap ?? 'random';
  const writeSize = ctx.options.writeSize ?? PAGE_SIZE;
  // Fractional pages carry over so the long-run rate is exact.
  let carry = (saved?.carry as number) ?? 0;
  ctx.os.cacheCapacity = Math.floor(ctx.memory.pages * 0.45);
  return {
    name: 'dirty',
    async step() {
      if (!warm.done) return (await warm.step(), 0);
      steps++;
      carry += (rate * STEP_MS) / 1000 / PAGE_SIZE;
      const n = Math.floor(carry);
      carry -= n;
      const anon = ctx.os.anon;
      const hot = Math.max(1, Math.floor(anon.length / 5));
      for (let i = 0; i < n && anon.length; i++) {
        const idx = ctx.rng.float() < 0.8 ? ctx.rng.int(hot) : ctx.rng.int(anon.length);
        ctx.os.rewriteAnon(anon[idx], heapWrite(ctx.rng, heap, writeSize));
      }
      pagesWritten += n;
      return STEP_MS;
    },
    state: () => ({ ...warm.state(), steps, pagesWritten, carry }),
    status: () => ({ phase: warm.phase, steps, pagesWritten, dirtyRate: rate, writeSize, heap }),
  };
};
