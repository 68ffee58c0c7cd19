/** `p2b dump INDEX.cindex.sqlite`: every entry as CSV "block,hash" or JSON lines, by block. */
import { ContentIndexReader } from '../../src/storage/content-index/reader.ts';

export function run(path: string, json: boolean): number {
  const reader = ContentIndexReader.open(path);
  const out: string[] = json ? [] : ['block,hash'];
  const flush = () => {
    if (out.length) process.stdout.write(out.join('\n') + '\n');
    out.length = 0;
  };
  for (const r of reader.rows()) {
    out.push(json ? JSON.stringify(r) : `${r.block},${r.hash}`);
    if (out.length >= 4096) flush();
  }
  flush();
  reader.close();
  return 0;
}
