/** `p2b stats DB`: how much of memory the map covers, how it was made, what invalidated it. */
import { P2bReader } from '../../src/p2b/reader.ts';
import { parse, onePositional } from './args.ts';
import { isContentIndex } from './kind.ts';
import * as cindex from './cindex-stats.ts';

export const help = `Usage: p2b stats DB [--json]

Mapped pages and their share of memory, distinct blocks, per region, mappings
by how they were made (read, write), and invalidations by cause. On a content
index (DIR/<export>.cindex.sqlite): entries, fill, and what recorded, dropped
and evicted them.`;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {});
  if (values.help) return void console.log(help), 0;
  const path = onePositional(positionals, 'one database path');
  if (isContentIndex(path)) return cindex.run(path, values.json ?? false);
  const reader = P2bReader.open(path);
  const s = reader.stats();
  reader.close();
  if (values.json) return void console.log(JSON.stringify(s)), 0;
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
  console.log(`p2b map of guest ${s.guest} (${s.clean ? 'closed cleanly' : 'open, or not closed cleanly'})`);
  console.log(`  storage: ${s.storage}`);
  console.log(`  pages: ${s.pages}, mapped: ${s.mappedPages} (${pct(s.mappedShare)}), referenceable: ${s.referenceablePages}, distinct blocks: ${s.blocks}`);
  console.log(`  by state: ${Object.entries(s.byState).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  for (const r of s.regions) console.log(`  region ${r.index}: ${r.mappedPages} of ${r.pages} pages mapped (${pct(r.mappedShare)})`);
  console.log(`  counters: ${Object.entries(s.counters).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  return 0;
}
