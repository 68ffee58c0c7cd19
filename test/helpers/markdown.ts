/** Tables out of a Markdown document, for tests that keep docs and code in agreement. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './processes.ts';

export function readDoc(path: string): string {
  return readFileSync(join(REPO, path), 'utf8');
}

const cells = (line: string) => line.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim().replace(/`/g, ''));

/** The rows of the table whose header row is exactly `header` (cells trimmed, backticks dropped). */
export function table(doc: string, header: string[]): string[][] {
  const all = tables(doc, header);
  if (all.length === 0) throw new Error(`no table with the header ${header.join(' | ')}`);
  return all[0];
}

/** The rows of every table whose header row is exactly `header`, table by table. */
export function tables(doc: string, header: string[]): string[][][] {
  const lines = doc.split('\n');
  const out: string[][][] = [];
  lines.forEach((l, at) => {
    if (!l.trim().startsWith('|') || cells(l).join('|') !== header.join('|')) return;
    const rows: string[][] = [];
    for (const line of lines.slice(at + 2)) {
      if (!line.trim().startsWith('|')) break;
      rows.push(cells(line));
    }
    out.push(rows);
  });
  return out;
}
