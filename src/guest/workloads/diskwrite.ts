/**
 * `diskwrite` — a writer (log shipper, backup target): fresh data is produced
 * in a pool of buffer pages (40 % of memory) and written to the disk's write
 * area at `--write-rate` (default 8 MiB/s), in runs of up to 8 blocks: mostly a
 * sequential log that wraps around, and 30 % overwrites of recently written
 * blocks. Mappings are created by writes (referenceable once flushed: a flush
 * every 16 writes) and invalidated by overwrites and buffer reuse. A 55 % page
 * cache stays warm beside it.
 */
import { PAGE_SIZE } from '../layout.ts';
import { anonFill } from './guest-os.ts';
import { WarmUp } from './phases.ts';
import type { WorkloadFactory } from './workload.ts';

export const DEFAULT_WRITE_RATE = 8 * 1024 * 1024;
const STEP_MS = 10;
const RUN = 8;

export const diskwrite: WorkloadFactory = (ctx, saved) => {
  const warm = new WarmUp(ctx, 0.4, 0.55, saved);
  let steps = (saved?.steps as number) ?? 0;
  let logHead = (saved?.logHead as number) ?? 0; // next block of the log, relative to the write area
  let bufferHead = (saved?.bufferHead as number) ?? 0;
  let writes = (saved?.writes as number) ?? 0;
  let carry = (saved?.carry as number) ?? 0;
  const rate = ctx.options.writeRate ?? DEFAULT_WRITE_RATE;
  const area = ctx.layout;
  if (area.writeBlocks < RUN) throw new RangeError('diskwrite needs a disk with a write area of at least 8 blocks');
  ctx.os.cacheCapacity = Math.floor(ctx.memory.pages * 0.55);
  return {
    name: 'diskwrite',
    async step() {
      if (!warm.done) return (await warm.step(), 0);
      steps++;
      carry += (rate * STEP_MS) / 1000 / PAGE_SIZE;
      const buffers = ctx.os.anon;
      const ios: Promise<void>[] = [];
      while (carry >= RUN) {
        carry -= RUN;
        // Take the next RUN buffer pages, fill them with fresh data, write them out.
        const pages: number[] = [];
        for (let i = 0; i < RUN; i++) {
          const p = buffers[bufferHead];
          bufferHead = (bufferHead + 1) % buffers.length;
          ctx.os.rewriteAnon(p, anonFill(ctx.rng, ctx.rng.float() < 0.3));
          pages.push(p);
        }
        let first: number;
        if (ctx.rng.float() < 0.3 && logHead > RUN) first = ctx.rng.int(logHead - RUN); // overwrite recent blocks
        else {
          if (logHead + RUN > area.writeBlocks) logHead = 0; // the log wraps
          first = logHead;
          logHead += RUN;
        }
        ios.push(ctx.disk.writePages(pages, area.writeFirst + first));
        writes++;
        if (writes % 16 === 0) {
          await Promise.all(ios.splice(0));
          await ctx.disk.flush();
        }
      }
      await Promise.all(ios);
      return STEP_MS;
    },
    state: () => ({ ...warm.state(), steps, logHead, bufferHead, writes, carry }),
    status: () => ({ phase: warm.phase, steps, writes, writeRate: rate }),
  };
};
