/**
 * Migration strategies compared in one run: the same workload, memory and link
 * limit, migrated with `baseline` and `p2b` alternately, several times each, by
 * three processes as across hosts (livemig's NBD server, source, destination).
 * Every run must verify. Reports medians and the p2b / baseline ratios.
 * (The full matrix, kernel link shaping and charts are the benchmark issue's.)
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runLocalMigration, makeDiskImage, diskBytesFor } from '../../src/migrate/local-run.ts';
import type { MigrationResult, Strategy } from '../../src/migrate/result.ts';
import { parseSize, parseRate, formatBytes } from '../../src/util/size.ts';
import { summarize, ratio } from '../lib/stats.ts';
import { saveResult, table } from '../lib/report.ts';
import { progress, progressDone } from '../lib/progress.ts';

export const help = `Usage: npm run bench -- migrate [--workloads pagecache,idle] [--memory 256MiB]
                              [--max-bandwidth 1Gbit] [--repeat 3] [--quick] [--json]

Migrates each workload with baseline and p2b, alternating, --repeat times each.
Goals (pagecache and idle at 1 Gbit/s): p2b link bytes <= 0.5x and total time
<= 0.6x of baseline; p2b downtime no worse than baseline + 10 %.
--quick: one workload (pagecache), 128 MiB, 2 repeats.`;

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      workloads: { type: 'string', default: 'pagecache,idle' },
      memory: { type: 'string', default: '256MiB' },
      'max-bandwidth': { type: 'string', default: '1Gbit' },
      repeat: { type: 'string', default: '3' },
      quick: { type: 'boolean' },
      json: { type: 'boolean' },
    },
  });
  const workloads = values.quick ? ['pagecache'] : values.workloads!.split(',');
  const memoryBytes = parseSize(values.quick ? '128MiB' : values.memory!)!;
  const maxBandwidth = parseRate(values['max-bandwidth']!)!;
  const repeat = values.quick ? 2 : Number(values.repeat);
  const dir = mkdtempSync(join(tmpdir(), 'livemig-bench-migrate-'));
  try {
    const image = makeDiskImage(join(dir, 'disk.img'), diskBytesFor(memoryBytes));
    const runs: Record<string, MigrationResult[]> = {};
    for (const workload of workloads) {
      for (let r = 0; r < repeat; r++) {
        for (const strategy of (r % 2 ? ['p2b', 'baseline'] : ['baseline', 'p2b']) as Strategy[]) {
          progress(`${workload} ${strategy} run ${r + 1}/${repeat}`);
          const res = await runLocalMigration({ memoryBytes, workload, strategy, maxBandwidth, downtimeLimitMs: 300, diskImage: image, seed: r + 1 });
          if (!res.verified || !res.destinationRunning) throw new Error(`${workload} ${strategy}: destination did not verify`);
          (runs[`${workload}/${strategy}`] ??= []).push(res);
        }
      }
    }
    progressDone();
    const med = (k: string, f: (m: MigrationResult) => number) => summarize(runs[k].map(f)).median;
    const rows: (string | number)[][] = [];
    const ratios: Record<string, { value: number; goal?: number }> = {};
    for (const w of workloads) {
      for (const s of ['baseline', 'p2b']) {
        const k = `${w}/${s}`;
        rows.push([w, s, Math.round(med(k, (m) => m.totalTimeMs)), Math.round(med(k, (m) => m.downtimeMs)), formatBytes(med(k, (m) => m.linkBytes)),
          formatBytes(med(k, (m) => m.nasBytes)), Math.round(med(k, (m) => m.rounds)), Math.round(med(k, (m) => m.pages.ref))]);
      }
      ratios[`${w}: link bytes p2b / baseline`] = { value: ratio(med(`${w}/p2b`, (m) => m.linkBytes), med(`${w}/baseline`, (m) => m.linkBytes)), goal: 0.5 };
      ratios[`${w}: total time p2b / baseline`] = { value: ratio(med(`${w}/p2b`, (m) => m.totalTimeMs), med(`${w}/baseline`, (m) => m.totalTimeMs)), goal: 0.6 };
      ratios[`${w}: downtime p2b / baseline`] = { value: ratio(med(`${w}/p2b`, (m) => m.downtimeMs), med(`${w}/baseline`, (m) => m.downtimeMs)), goal: 1.1 };
    }
    const command = `npm run bench -- migrate ${args.join(' ')}`.trim();
    const raw = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, v.map(({ roundStats, ...rest }) => ({ ...rest, roundStats }))]));
    const path = saveResult(values.quick ? 'migrate-quick' : 'migrate', command, { parameters: { workloads, memoryBytes, maxBandwidth, repeat }, ratios, runs: raw });
    if (values.json) return void console.log(JSON.stringify({ ratios, path }));
    console.log(`\nMigrations of ${formatBytes(memoryBytes)} guests at ${values['max-bandwidth']}, median of ${repeat}, every run verified\n`);
    console.log(table(['workload', 'strategy', 'total ms', 'downtime ms', 'link', 'storage reads', 'rounds', 'refs'], rows));
    console.log(`\n${table(['ratio (same run)', 'value', 'goal', 'met'], Object.entries(ratios).map(([k, r]) => [k, r.value.toFixed(2), `<= ${r.goal}`, r.value <= r.goal! ? 'yes' : 'NO']))}`);
    console.log(`\nraw figures: ${path}\ncommand: ${command}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
