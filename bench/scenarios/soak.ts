/**
 * The soak (bench/soak/ping-pong.ts): N migrations of one running guest back and
 * forth between two agents, each checked by the oracle. Goals: the resident
 * memory and open file descriptors of both agents stay within ±10 % of their
 * figures at the 10th migration (judged on where each settles: the median of its
 * last 10 figures in the same role; the largest single deviation is reported too);
 * nothing left behind at the end.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runSoak, drift, settledDrift, type SoakMigration } from '../soak/ping-pong.ts';
import { saveResult, table, RESULTS_DIR } from '../lib/report.ts';
import { progress, progressDone } from '../lib/progress.ts';

export const help = `Usage: npm run bench -- soak [--migrations 100] [--memory-mib 16] [--workload mixed] [--json] [--out DIR]

Migrates one running guest back and forth between two 'livemig run --incoming
--stay' agents, --migrations times, each checked by the oracle (both memories
fingerprinted at the switch-over). Records RSS and open file descriptors of both
agents after each migration, once each agent says it is idle (no migration, no
guest being let go, threads booted ahead loaded) and has closed every control
connection, and compares them with the 10th migration's (the
agents swap roles every migration: each is compared with its figure in the same
role); checks that no socket, temp file or namespace is left at the end.`;

const MiB = 2 ** 20;
const REFERENCE = 10;

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      migrations: { type: 'string', default: '100' },
      'memory-mib': { type: 'string', default: '16' },
      workload: { type: 'string', default: 'mixed' },
      json: { type: 'boolean' },
      out: { type: 'string' },
    },
  });
  const n = Number(values.migrations);
  const dir = mkdtempSync(join(tmpdir(), 'livemig-soak-'));
  const load0 = loadavg();
  try {
    const r = await runSoak({
      dir, migrations: n, memoryBytes: Number(values['memory-mib']) * MiB, workload: values.workload,
      onMigration: (m) => progress(`migration ${m.index}/${n}: ${m.from}->${m.to} oracle ${m.oracleEqual ? 'equal' : 'DIFFERS'}, fds A ${m.agents.A.fds} B ${m.agents.B.fds}`),
    });
    progressDone();
    const ref = Math.min(REFERENCE, Math.max(1, n - 1));
    const summary = {
      migrations: r.migrations.length,
      allVerified: r.migrations.every((m) => m.verified && m.oracleEqual),
      reference: ref,
      rssDrift: drift(r.migrations, ref, 'rssBytes'),
      fdDrift: drift(r.migrations, ref, 'fds'),
      /** The median of the last 10 in each role against the reference: where each agent settled. */
      rssSettled: settledDrift(r.migrations, ref, 'rssBytes'),
      fdSettled: settledDrift(r.migrations, ref, 'fds'),
      left: r.left,
    };
    const command = `npm run bench -- soak ${args.join(' ')}`.trim();
    const path = saveResult('soak', command, { loadavgBefore: load0, loadavgAfter: loadavg(), summary, perMigration: r.migrations }, values.out ?? RESULTS_DIR);
    if (values.json) console.log(JSON.stringify(summary));
    const at = (m: SoakMigration | undefined) => (m ? [m.index, `${(m.agents.A.rssBytes / MiB).toFixed(0)} / ${(m.agents.B.rssBytes / MiB).toFixed(0)} MiB`, `${m.agents.A.fds} / ${m.agents.B.fds}`, m.totalTimeMs] : []);
    const picks = [1, ref, ref + 1, Math.floor(n / 2), n - 1, n].filter((i, k, a) => i >= 1 && i <= n && a.indexOf(i) === k);
    console.log(table(['after migration', 'RSS A / B', 'fds A / B', 'total ms'], picks.map((i) => at(r.migrations.find((m) => m.index === i)))));
    const pct = (d: Record<string, number>) => `A ${(100 * d.A).toFixed(1)} %, B ${(100 * d.B).toFixed(1)} %`;
    console.log(`all ${summary.migrations} verified by the oracle: ${summary.allVerified}; largest drift of one sample from migration ${ref}: RSS ${pct(summary.rssDrift)}, fds ${pct(summary.fdDrift)}`);
    console.log(`settled (median of the last 10 in each role) against migration ${ref}: RSS ${pct(summary.rssSettled)}, fds ${pct(summary.fdSettled)}`);
    console.log(`left behind: ${JSON.stringify(r.left)}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; results in ${path}`);
    const clean = !r.left.socketFiles.length && !r.left.tmpFiles.length && !r.left.netns.length && r.left.exitCodes.A === 0 && r.left.exitCodes.B === 0;
    if (!summary.allVerified || !clean || Math.max(summary.rssSettled.A, summary.rssSettled.B, summary.fdSettled.A, summary.fdSettled.B) > 0.1) process.exitCode = 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
