/** `npm run bench -- SCENARIO [options]`: performance goals, measured as ratios in one run. */
import * as nbd from './scenarios/nbd.ts';
import * as interceptor from './scenarios/interceptor.ts';
import * as p2b from './scenarios/p2b.ts';
import * as migrateBench from './scenarios/migrate.ts';
import * as cindex from './scenarios/cindex.ts';
import * as qemu from './scenarios/qemu.ts';
import * as fuzz from './scenarios/fuzz.ts';
import * as soak from './scenarios/soak.ts';

const SCENARIOS: Record<string, { run: (args: string[]) => Promise<void>; summary: string; help: string }> = {
  nbd: { run: nbd.run, summary: 'our NBD server vs nbdkit, our client vs nbdcopy', help: nbd.help },
  interceptor: { run: interceptor.run, summary: 'guest disk I/O with the interceptor vs without', help: interceptor.help },
  p2b: { run: p2b.run, summary: 'p2b map updates in memory and rows persisted to SQLite', help: p2b.help },
  cindex: { run: cindex.run, summary: 'content index: hash, table, SQLite rows, batch lookups over the query socket', help: cindex.help },
  migrate: { run: migrateBench.run, summary: 'p2b vs baseline migrations, same workload and link', help: migrateBench.help },
  qemu: { run: qemu.run, summary: 'stock QEMU guest: direct migration vs through livemig qemu-proxy', help: qemu.help },
  soak: { run: soak.run, summary: 'a guest migrated back and forth between two agents: memory and fds stay flat, nothing left', help: soak.help },
  fuzz: { run: fuzz.run, summary: 'hostile sessions against a destination and the NBD server: no crash, no hang, bounded memory', help: fuzz.help },
};

const HELP = `Usage: npm run bench -- SCENARIO [options]

Scenarios:
${Object.entries(SCENARIOS).map(([n, s]) => `  ${n.padEnd(12)} ${s.summary}`).join('\n')}

Results go to bench/results/<date>-<scenario>.json; a table is printed on stdout.`;

const [name, ...rest] = process.argv.slice(2);
if (!name || name === '--help' || name === '-h') {
  console.log(HELP);
  process.exit(name ? 0 : 2);
}
const scenario = SCENARIOS[name];
if (!scenario) {
  console.error(`bench: unknown scenario ${JSON.stringify(name)} (have: ${Object.keys(SCENARIOS).join(', ')})`);
  process.exit(2);
}
if (rest.includes('--help')) {
  console.log(scenario.help);
  process.exit(0);
}
try {
  await scenario.run(rest);
} catch (err) {
  console.error(`bench ${name}: ${(err as Error).message}`);
  process.exit(1);
}
