/** Tables out of a Markdown document, for tests that keep docs and code in agreement. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './processes.ts';

export function readDoc(path: string): string {
  return readFileSync(join(REPO, path), 'utf8');
}

/** The rows of the table whose header row is exactly `header` (cells trimmed, backticks dropped). */
export function table(doc: string, header: string[]): string[][] {
  const cells = (line: string) => line.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim().replace(/`/g, ''));
  const lines = doc.split('\n');
  const at = lines.findIndex((l) => l.trim().startsWith('|') && cells(l).join('|') === header.join('|'));
  if (at < 0) throw new Error(`no table with the header ${header.join(' | ')}`);
  const rows: string[][] = [];
  for (const line of lines.slice(at + 2)) {
    if (!line.trim().startsWith('|')) break;
    rows.push(cells(line));
  }
  return rows;
}
