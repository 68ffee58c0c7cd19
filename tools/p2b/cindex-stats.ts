/** `p2b stats INDEX.cindex.sqlite`: entries, fill, and what recorded, dropped and evicted them. */
import { ContentIndexReader } from '../../src/storage/content-index/reader.ts';

export function run(path: string, json: boolean): number {
  const reader = ContentIndexReader.open(path);
  const s = reader.stats();
  reader.close();
  if (json) return void console.log(JSON.stringify(s)), 0;
  console.log(`content index of export ${JSON.stringify(s.export)} (${s.clean ? 'closed cleanly' : 'open, or not closed cleanly'})`);
  console.log(`  image: ${s.image ?? '(no file)'}, hash ${s.hash}`);
  console.log(`  entries: ${s.entries} of ${s.capacity} (${(s.fill * 100).toFixed(1)} %)`);
  console.log(`  counters: ${Object.entries(s.counters).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  return 0;
}
