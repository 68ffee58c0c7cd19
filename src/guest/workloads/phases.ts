/**
 * Building blocks several profiles share: filling anonymous memory, warming the
 * page cache in popularity order, and touching files by Zipf popularity.
 */
import { Zipf } from '../../util/rng.ts';
import { heapFill } from './heap.ts';
import type { WorkloadContext } from './workload.ts';

/** Allocates anonymous pages up to `share` of memory, in batches; true when done. */
export async function fillAnon(ctx: WorkloadContext, share: number, batch = 2048): Promise<boolean> {
  const target = Math.floor(ctx.memory.pages * share);
  for (let i = 0; i < batch && ctx.os.anon.length < target; i++) {
    if (ctx.os.allocAnon(heapFill(ctx.rng, ctx.options.heap ?? 'random')) < 0) return true;
  }
  return ctx.os.anon.length >= target;
}

/** Reads files in popularity order until the cache holds `share` of memory; true when done. */
export async function warmCache(ctx: WorkloadContext, share: number, cursor: { next: number }, parallel = 8): Promise<boolean> {
  const target = Math.min(Math.floor(ctx.memory.pages * share), ctx.os.cacheCapacity);
  const files = ctx.layout.files;
  const batch: Promise<unknown>[] = [];
  let reserved = ctx.os.cachedPages;
  while (batch.length < parallel && reserved < target && cursor.next < files.length) {
    const f = files[cursor.next];
    const n = Math.min(f.blocks, target - reserved);
    reserved += n;
    batch.push(ctx.os.readExtent(cursor.next, f.first, n));
    cursor.next++;
  }
  await Promise.all(batch);
  return ctx.os.cachedPages >= target || cursor.next >= files.length;
}

/** Reads `count` files chosen by Zipf popularity through the page cache. */
export async function readPopular(ctx: WorkloadContext, zipf: Zipf, count: number): Promise<void> {
  const files = ctx.layout.files;
  const reads: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const id = zipf.sample(ctx.rng);
    reads.push(ctx.os.readExtent(id, files[id].first, files[id].blocks));
  }
  await Promise.all(reads);
}

export function zipfOverFiles(ctx: WorkloadContext, s = 0.9): Zipf {
  return new Zipf(ctx.layout.files.length, s);
}

/**
 * The warm-up every profile starts with: heap memory up to `anonShare`, then the
 * page cache up to `cacheShare` (skipped when 0), as fast as the disk allows.
 */
export class WarmUp {
  phase: string;
  private readonly cursor: { next: number };

  constructor(
    private readonly ctx: WorkloadContext,
    private readonly anonShare: number,
    private readonly cacheShare: number,
    saved?: Record<string, unknown>,
  ) {
    this.phase = (saved?.phase as string) ?? 'anon';
    this.cursor = { next: (saved?.cursor as number) ?? 0 };
  }

  get done(): boolean {
    return this.phase === 'steady';
  }

  /** One warm-up step; call while !done. */
  async step(): Promise<void> {
    if (this.phase === 'anon') {
      if (await fillAnon(this.ctx, this.anonShare)) this.phase = this.cacheShare > 0 ? 'warm' : 'steady';
    } else if (this.phase === 'warm') {
      if (await warmCache(this.ctx, this.cacheShare, this.cursor)) this.phase = 'steady';
    }
  }

  state(): Record<string, unknown> {
    return { phase: this.phase, cursor: this.cursor.next };
  }
}
