/**
 * `p2b verify DB --memory IMAGE --storage URI|PATH`: checks every mapping byte
 * for byte — the page in the memory image against the block on the storage.
 */
import { LivemigError } from '../../src/errors.ts';
import { openSync, readSync, closeSync, fstatSync } from 'node:fs';
import { P2bReader, STATE_NAMES, type MappingRow } from '../../src/p2b/reader.ts';
import { P2B } from '../../src/p2b/map.ts';
import { openBackend } from '../../src/storage/open.ts';
import { PAGE_SIZE } from '../../src/guest/layout.ts';
import { parse, onePositional, UsageError } from './args.ts';
import { isContentIndex } from './kind.ts';
import * as cindex from './cindex-verify.ts';

export const help = `Usage: p2b verify DB --memory IMAGE --storage URI|PATH [--json] [--max-listed N]
       p2b verify INDEX.cindex.sqlite [--storage URI|PATH] [--json] [--max-listed N]

Reads each mapped page from IMAGE (written by 'livemig dump-memory') and its
block from the storage, and compares them. Mismatches are listed (the first
--max-listed, default 20); exit 1 if any mapping that claims equality is wrong.
Entries reloaded as 'unverified' are checked and counted, but cannot fail the
check: they never claimed to be current.

Use a map and an image of the same instant: 'livemig dump-memory --out IMAGE'
writes both (IMAGE and IMAGE.p2b.sqlite). If the guest writes its disk, pause it
before the dump and resume it after the check.

On a content index: re-reads every indexed block (from the image on record, or
--storage) and hashes it with the index's seed; exit 1 if any entry is stale.
The file lags the running server by up to 250 ms, so check a quiet disk.`;

const BATCH = 256;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { memory: { type: 'string' }, storage: { type: 'string' }, 'max-listed': { type: 'string' } });
  if (values.help) return void console.log(help), 0;
  const path = onePositional(positionals, 'one database path');
  const maxListed = Number(values['max-listed'] ?? 20);
  if (isContentIndex(path)) return cindex.run(path, { storage: values.storage, maxListed }, values.json ?? false);
  if (!values.memory || !values.storage) throw new UsageError('verify needs --memory IMAGE and --storage URI|PATH');
  const reader = P2bReader.open(path);
  const imageFd = openSync(values.memory, 'r');
  const imageSize = fstatSync(imageFd).size;
  if (imageSize !== reader.meta.pages * PAGE_SIZE) {
    closeSync(imageFd);
    reader.close();
    throw new LivemigError('P2B_MISMATCH', `${values.memory} holds ${imageSize} bytes but the map describes ${reader.meta.pages * PAGE_SIZE}`);
  }
  // Read-only and unlocked: the guest may hold the image's lock while we look.
  const storage = await openBackend(values.storage, { readOnly: true, lock: false });
  const result = { checked: 0, matched: 0, mismatches: 0, unverifiedChecked: 0, unverifiedStale: 0, outOfRange: 0 };
  const listed: { page: number; block: number; state: string }[] = [];
  const page = Buffer.alloc(PAGE_SIZE);
  const check = async (batch: MappingRow[]) => {
    const blocks = batch.map(() => Buffer.allocUnsafe(PAGE_SIZE));
    await Promise.all(
      batch.map((r, i) => ((r.block + 1) * PAGE_SIZE <= storage.size ? storage.readInto(blocks[i], r.block * PAGE_SIZE) : Promise.resolve())),
    );
    batch.forEach((r, i) => {
      const inRange = (r.block + 1) * PAGE_SIZE <= storage.size;
      readSync(imageFd, page, 0, PAGE_SIZE, r.page * PAGE_SIZE);
      const equal = inRange && page.equals(blocks[i]);
      if (r.state === P2B.UNVERIFIED) {
        result.unverifiedChecked++;
        if (!equal) result.unverifiedStale++;
        return;
      }
      result.checked++;
      if (!inRange) result.outOfRange++;
      if (equal) return void result.matched++;
      result.mismatches++;
      if (listed.length < maxListed) listed.push({ page: r.page, block: r.block, state: STATE_NAMES[r.state] ?? String(r.state) });
    });
  };
  try {
    let batch: MappingRow[] = [];
    for (const r of reader.rows()) {
      batch.push(r);
      if (batch.length === BATCH) {
        await check(batch);
        batch = [];
      }
    }
    if (batch.length) await check(batch);
  } finally {
    closeSync(imageFd);
    reader.close();
    await storage.close();
  }
  if (values.json) console.log(JSON.stringify({ ...result, ok: result.mismatches === 0, listed }));
  else {
    console.log(`checked ${result.checked} mappings: ${result.matched} match, ${result.mismatches} differ${result.outOfRange ? ` (${result.outOfRange} beyond the storage)` : ''}`);
    if (result.unverifiedChecked) console.log(`unverified entries: ${result.unverifiedChecked} checked, ${result.unverifiedStale} stale`);
    for (const m of listed) console.log(`  page ${m.page} != block ${m.block} (${m.state})`);
    if (result.mismatches > listed.length) console.log(`  … and ${result.mismatches - listed.length} more`);
  }
  return result.mismatches === 0 ? 0 : 1;
}
