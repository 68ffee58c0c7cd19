/** `livemig demo`: placeholder until the migration engine lands (issue #4). */
import { parse } from '../parse.ts';

export const help = `Usage: livemig demo [--json]

Runs a whole live migration on this machine with embedded defaults.
Not built yet: the migration engine arrives with issue #4.`;

export async function run(args: string[]): Promise<number> {
  const { values } = parse(args, {
    memory: { type: 'string' },
    workload: { type: 'string' },
    strategy: { type: 'string' },
    'max-bandwidth': { type: 'string' },
  });
  if (values.help) {
    console.log(help);
    return 0;
  }
  const message = 'the migration demo is not built yet (issue #4); try `livemig nbd serve --help` for what works today';
  if (values.json) console.log(JSON.stringify({ available: false, message }));
  else console.log(`livemig demo: ${message}`);
  return 0;
}
