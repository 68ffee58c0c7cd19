/** `p2b dump DB`: every mapping, as CSV or JSON lines. */
import { P2bReader, STATE_NAMES } from '../../src/p2b/reader.ts';
import { parse, onePositional } from './args.ts';
import { isContentIndex } from './kind.ts';
import * as cindex from './cindex-dump.ts';

export const help = `Usage: p2b dump DB [--json]

Every mapping, ordered by page: CSV "page,block,state" with a header line,
or one JSON object per line with --json. On a content index: "block,hash" by
block (hash: 16 hex digits).`;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {});
  if (values.help) return void console.log(help), 0;
  const path = onePositional(positionals, 'one database path');
  if (isContentIndex(path)) return cindex.run(path, values.json ?? false);
  const reader = P2bReader.open(path);
  const out: string[] = values.json ? [] : ['page,block,state'];
  const flush = () => {
    if (out.length) process.stdout.write(out.join('\n') + '\n');
    out.length = 0;
  };
  for (const r of reader.rows()) {
    const state = STATE_NAMES[r.state] ?? String(r.state);
    out.push(values.json ? JSON.stringify({ page: r.page, block: r.block, state }) : `${r.page},${r.block},${state}`);
    if (out.length >= 4096) flush();
  }
  flush();
  reader.close();
  return 0;
}
