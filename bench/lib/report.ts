/** Writes a benchmark's raw figures to bench/results/<date>-<name>.json (or another dir) and prints a table. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeMachine } from './machine.ts';

export const RESULTS_DIR = new URL('../results/', import.meta.url).pathname;

export function saveResult(name: string, command: string, data: object, dir = RESULTS_DIR): string {
  mkdirSync(dir, { recursive: true });
  const date = new Date().toISOString().slice(0, 10);
  const path = join(dir, `${date}-${name}.json`);
  writeFileSync(path, JSON.stringify({ name, command, date: new Date().toISOString(), machine: describeMachine(), ...data }, null, 2) + '\n');
  return path;
}

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(cells[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.slice(1).map(line)].join('\n');
}
