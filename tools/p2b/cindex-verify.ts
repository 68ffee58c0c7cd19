/**
 * `p2b verify INDEX.cindex.sqlite [--storage URI|PATH]`: re-reads every indexed
 * block and hashes it with the index's seed; exit 1 if any entry is stale.
 */
import { ContentIndexReader, type CindexRow } from '../../src/storage/content-index/reader.ts';
import { BlockHasher, BLOCK_SIZE, hashToHex } from '../../src/storage/content-index/fast-hash.ts';
import { openBackend } from '../../src/storage/open.ts';
import { UsageError } from './args.ts';

const BATCH = 256;

export async function run(path: string, opts: { storage?: string; maxListed: number }, json: boolean): Promise<number> {
  const reader = ContentIndexReader.open(path);
  const storageSpec = opts.storage ?? reader.meta.image;
  if (!storageSpec) {
    reader.close();
    throw new UsageError('this index has no image file on record: give --storage URI|PATH');
  }
  const hasher = new BlockHasher(reader.meta.seed);
  // Read-only and unlocked: the NBD server holds the image's lock while it runs.
  const storage = await openBackend(storageSpec, { readOnly: true, lock: false });
  const result = { checked: 0, matched: 0, stale: 0, outOfRange: 0 };
  const listed: { block: number; indexed: string; actual: string | null }[] = [];
  const check = async (batch: CindexRow[]) => {
    const bufs = batch.map(() => Buffer.allocUnsafe(BLOCK_SIZE));
    const inRange = batch.map((r) => (r.block + 1) * BLOCK_SIZE <= storage.size);
    await Promise.all(batch.map((r, i) => (inRange[i] ? storage.readInto(bufs[i], r.block * BLOCK_SIZE) : Promise.resolve())));
    batch.forEach((r, i) => {
      result.checked++;
      let actual: string | null = null;
      if (inRange[i]) {
        hasher.hash(bufs[i]);
        actual = hashToHex(hasher.hi, hasher.lo);
        if (actual === r.hash) return void result.matched++;
      } else result.outOfRange++;
      result.stale++;
      if (listed.length < opts.maxListed) listed.push({ block: r.block, indexed: r.hash, actual });
    });
  };
  try {
    let batch: CindexRow[] = [];
    for (const r of reader.rows()) {
      batch.push(r);
      if (batch.length === BATCH) (await check(batch), (batch = []));
    }
    if (batch.length) await check(batch);
  } finally {
    reader.close();
    await storage.close();
  }
  if (json) console.log(JSON.stringify({ ...result, ok: result.stale === 0, listed }));
  else {
    console.log(`checked ${result.checked} entries against ${storageSpec}: ${result.matched} match, ${result.stale} stale${result.outOfRange ? ` (${result.outOfRange} beyond the storage)` : ''}`);
    for (const m of listed) console.log(`  block ${m.block}: indexed ${m.indexed}, holds ${m.actual ?? '(beyond the end)'}`);
    if (result.stale > listed.length) console.log(`  … and ${result.stale - listed.length} more`);
  }
  return result.stale === 0 ? 0 : 1;
}
