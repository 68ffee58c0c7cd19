/** The `p2b` command: inspects livemig page-to-block map databases. */
import * as stats from './p2b/stats.ts';
import * as dump from './p2b/dump.ts';
import * as lookup from './p2b/lookup.ts';
import * as verify from './p2b/verify.ts';
import * as diff from './p2b/diff.ts';
import { UsageError } from './p2b/args.ts';

const COMMANDS: Record<string, { run: (args: string[]) => Promise<number>; summary: string }> = {
  stats: { run: stats.run, summary: 'mapped pages, share of memory, distinct blocks, per region, counters' },
  dump: { run: dump.run, summary: 'every mapping as CSV (or JSON lines with --json)' },
  lookup: { run: lookup.run, summary: 'one page (--page N) or the pages of a block (--block N)' },
  verify: { run: verify.run, summary: 'check every mapping byte for byte against a memory image and the storage' },
  diff: { run: diff.run, summary: 'compare two maps' },
};

const HELP = `p2b — inspect livemig page-to-block (p2b) map databases

Usage: p2b COMMAND DB [options] [--json]

Commands:
${Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(8)} ${c.summary}`).join('\n')}

A guest started with 'livemig run' keeps its map in STATE-DIR/p2b.sqlite; p2b
reads it while the guest runs. stats, dump, lookup and verify also read the
content indexes of 'livemig nbd serve --content-index DIR'
(DIR/<export>.cindex.sqlite), told apart by the file's application_id. Exit codes: 0 success, 1 failure or a check
that found differences, 2 bad usage.`;

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    console.log(HELP);
    return argv.length === 0 ? 2 : 0;
  }
  const command = COMMANDS[argv[0]];
  try {
    if (!command) throw new UsageError(`unknown command ${JSON.stringify(argv[0])} (have: ${Object.keys(COMMANDS).join(', ')})`);
    return await command.run(argv.slice(1));
  } catch (err) {
    const e = err as Error & { code?: string };
    if (err instanceof UsageError) {
      console.error(`p2b: ${e.message}\nTry 'p2b ${command ? argv[0] + ' ' : ''}--help'.`);
      return 2;
    }
    console.error(`p2b: ${e.message}${typeof e.code === 'string' ? ` [${e.code}]` : ''}`);
    return 1;
  }
}
