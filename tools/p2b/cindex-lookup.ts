/** `p2b lookup INDEX.cindex.sqlite --hash HEX | --block N`: the block holding a content, or a block's content hash. */
import { ContentIndexReader } from '../../src/storage/content-index/reader.ts';
import { hexToHash } from '../../src/storage/content-index/fast-hash.ts';
import { integer, UsageError } from './args.ts';

export function run(path: string, opts: { hash?: string; block?: string }, json: boolean): number {
  if ((opts.hash === undefined) === (opts.block === undefined)) throw new UsageError('on a content index give exactly one of --hash HEX or --block N');
  const hash = opts.hash === undefined ? null : hexToHash(opts.hash);
  if (opts.hash !== undefined && !hash) throw new UsageError(`--hash must be 16 hex digits, got ${JSON.stringify(opts.hash)}`);
  const reader = ContentIndexReader.open(path);
  const rows = hash ? reader.byHash(hash[0], hash[1]) : reader.byBlock(integer('--block', opts.block!));
  reader.close();
  if (json) console.log(JSON.stringify(rows));
  else if (rows.length === 0) console.log(hash ? `no block is indexed with hash ${opts.hash}` : `block ${opts.block} is not indexed`);
  else for (const r of rows) console.log(`hash ${r.hash} -> block ${r.block}`);
  return rows.length ? 0 : 1;
}
