/**
 * `mixed` — a database. Table blocks are read one at a time into a buffer pool
 * of 85 % of memory (Zipf-popular rows, so the pool has a hot core); 30 % of
 * accesses update the page in memory (its mapping is dropped and the buffer is
 * dirty); every step commits by writing a log block and flushing; a checkpointer
 * writes dirty buffers back every 10 steps (those pages are mapped again, by
 * write). 10 % of memory is connection heap. Evicting a dirty buffer writes it
 * back first, as a database must.
 */
import { Zipf } from '../../util/rng.ts';
import { anonFill } from './guest-os.ts';
import { WarmUp } from './phases.ts';
import type { WorkloadFactory } from './workload.ts';

const STEP_MS = 10;
const TRANSACTIONS_PER_STEP = 20;

export const mixed: WorkloadFactory = (ctx, saved) => {
  const heap = new WarmUp(ctx, 0.1, 0, saved?.heap as Record<string, unknown> | undefined);
  let phase = (saved?.phase as string) ?? 'heap';
  let steps = (saved?.steps as number) ?? 0;
  let logHead = (saved?.logHead as number) ?? 0;
  let commits = (saved?.commits as number) ?? 0;
  let warmRank = (saved?.warmRank as number) ?? 0;
  const { writeFirst, writeBlocks } = ctx.layout;
  const tableBlocks = writeFirst; // the file area is the table
  if (writeBlocks < 1 || tableBlocks < 1) throw new RangeError('mixed needs a disk with table and log areas');
  ctx.os.cacheCapacity = Math.floor(ctx.memory.pages * 0.85);
  const zipf = new Zipf(tableBlocks, 0.9);
  // Rank r of the popularity order lives at a scattered block, so hot rows are not one run.
  const blockOfRank = (r: number) => (r * 2654435761) % tableBlocks;

  // Every random draw happens before the first await, so I/O timing cannot change what is done.
  const access = async (block: number, update: boolean) => {
    const row = update ? ctx.rng.int(64) * 64 : 0;
    const bytes = new Uint8Array(update ? 64 : 0);
    if (update) ctx.rng.fill(bytes);
    const e = await ctx.os.readExtent(block, block, 1);
    if (!e || !update) return;
    ctx.memory.write(e.pages[0], row, bytes);
    e.dirty = true;
  };

  return {
    name: 'mixed',
    async step() {
      if (phase === 'heap') {
        await heap.step();
        if (heap.done) phase = 'warm';
        return 0;
      }
      if (phase === 'warm') {
        const reads: Promise<void>[] = [];
        for (let i = 0; i < 256 && ctx.os.cachedPages + reads.length < ctx.os.cacheCapacity && warmRank < tableBlocks; i++) {
          reads.push(access(blockOfRank(warmRank++), false));
        }
        await Promise.all(reads);
        if (ctx.os.cachedPages >= ctx.os.cacheCapacity || warmRank >= tableBlocks) phase = 'steady';
        return 0;
      }
      steps++;
      const txs: Promise<void>[] = [];
      for (let t = 0; t < TRANSACTIONS_PER_STEP; t++) {
        const block = blockOfRank(zipf.sample(ctx.rng));
        txs.push(access(block, ctx.rng.float() < 0.3));
      }
      await Promise.all(txs);
      // Commit: the log record is built in a heap page and written to the log area.
      const logPage = ctx.os.anon[0];
      if (logPage !== undefined) {
        ctx.os.rewriteAnon(logPage, anonFill(ctx.rng, true));
        await ctx.disk.writePages([logPage], writeFirst + logHead);
        logHead = (logHead + 1) % writeBlocks;
        await ctx.disk.flush();
        commits++;
      }
      if (steps % 10 === 0) {
        const dirtyExtents = [...ctx.os.cache.values()].filter((e) => e.dirty).slice(0, 64);
        await Promise.all(dirtyExtents.map((e) => ctx.os.writeBack(e)));
        await ctx.disk.flush();
      }
      return STEP_MS;
    },
    state: () => ({ phase, heap: heap.state(), steps, logHead, commits, warmRank }),
    status: () => ({ phase, steps, commits, ...ctx.os.stats }),
  };
};
