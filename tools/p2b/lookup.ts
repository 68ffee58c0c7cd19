/** `p2b lookup DB --page N | --block N`: one page's mapping, or the pages mapped to a block. */
import { P2bReader, STATE_NAMES } from '../../src/p2b/reader.ts';
import { parse, onePositional, integer, UsageError } from './args.ts';
import { isContentIndex } from './kind.ts';
import * as cindex from './cindex-lookup.ts';

export const help = `Usage: p2b lookup DB (--page N | --block N) [--json]
       p2b lookup INDEX.cindex.sqlite (--hash HEX | --block N) [--json]

Exit 1 when nothing is mapped there.`;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { page: { type: 'string' }, block: { type: 'string' }, hash: { type: 'string' } });
  if (values.help) return void console.log(help), 0;
  const path = onePositional(positionals, 'one database path');
  if (isContentIndex(path)) {
    if (values.page !== undefined) throw new UsageError('a content index has no pages: give --hash HEX or --block N');
    return cindex.run(path, values, values.json ?? false);
  }
  if (values.hash !== undefined) throw new UsageError('--hash is for content indexes; a p2b map takes --page N or --block N');
  if ((values.page === undefined) === (values.block === undefined)) throw new UsageError('give exactly one of --page N or --block N');
  const reader = P2bReader.open(path);
  const rows = values.page !== undefined ? [reader.byPage(integer('--page', values.page))].filter((r) => r !== undefined) : reader.byBlock(integer('--block', values.block!));
  reader.close();
  const named = rows.map((r) => ({ page: r!.page, block: r!.block, state: STATE_NAMES[r!.state] ?? String(r!.state) }));
  if (values.json) console.log(JSON.stringify(named));
  else if (named.length === 0) console.log(values.page !== undefined ? `page ${values.page} is not mapped` : `no page is mapped to block ${values.block}`);
  else for (const r of named) console.log(`page ${r.page} -> block ${r.block} (${r.state})`);
  return named.length ? 0 : 1;
}
