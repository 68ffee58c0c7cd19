/** `p2b diff DB1 DB2`: how two maps differ, page by page. */
import { P2bReader, STATE_NAMES, type MappingRow } from '../../src/p2b/reader.ts';
import { parse, UsageError } from './args.ts';

export const help = `Usage: p2b diff DB1 DB2 [--json] [--max-listed N]

Pages mapped only in one map, and pages mapped to different blocks. Exit 0 when
the maps are the same, 1 when they differ.`;

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { 'max-listed': { type: 'string' } });
  if (values.help) return void console.log(help), 0;
  if (positionals.length !== 2) throw new UsageError('expected two database paths');
  const maxListed = Number(values['max-listed'] ?? 20);
  const [a, b] = positionals.map((p) => P2bReader.open(p));
  const counts = { same: 0, onlyInFirst: 0, onlyInSecond: 0, differentBlock: 0, differentState: 0 };
  const listed: { page: number; first?: string; second?: string }[] = [];
  const describe = (r: MappingRow) => `block ${r.block} (${STATE_NAMES[r.state] ?? r.state})`;
  const note = (page: number, x?: MappingRow, y?: MappingRow) => {
    if (listed.length < maxListed) listed.push({ page, first: x && describe(x), second: y && describe(y) });
  };
  // Both iterate in page order: a merge walk needs no memory beyond two rows.
  const ia = a.rows();
  const ib = b.rows();
  let x = ia.next();
  let y = ib.next();
  while (!x.done || !y.done) {
    if (y.done || (!x.done && x.value.page < y.value.page)) {
      counts.onlyInFirst++;
      note(x.value.page, x.value);
      x = ia.next();
    } else if (x.done || y.value.page < x.value.page) {
      counts.onlyInSecond++;
      note(y.value.page, undefined, y.value);
      y = ib.next();
    } else {
      if (x.value.block !== y.value.block) (counts.differentBlock++, note(x.value.page, x.value, y.value));
      else if (x.value.state !== y.value.state) (counts.differentState++, note(x.value.page, x.value, y.value));
      else counts.same++;
      x = ia.next();
      y = ib.next();
    }
  }
  a.close();
  b.close();
  const differ = counts.onlyInFirst + counts.onlyInSecond + counts.differentBlock + counts.differentState;
  if (values.json) console.log(JSON.stringify({ ...counts, identical: differ === 0, listed }));
  else {
    console.log(`same ${counts.same}, only in first ${counts.onlyInFirst}, only in second ${counts.onlyInSecond}, different block ${counts.differentBlock}, different state ${counts.differentState}`);
    for (const l of listed) console.log(`  page ${l.page}: ${l.first ?? '-'}  |  ${l.second ?? '-'}`);
  }
  return differ === 0 ? 0 : 1;
}
