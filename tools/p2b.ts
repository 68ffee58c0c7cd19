/** The `p2b` command: inspects page-to-block map databases. The map itself arrives with issue #3. */
const HELP = `p2b — inspect livemig page-to-block (p2b) map databases

Usage: p2b stats|dump|lookup|verify|diff DB [options] [--json]

Not built yet: the p2b map arrives with issue #3.`;

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h') {
    console.log(HELP);
    return argv.length === 0 ? 2 : 0;
  }
  console.error(`p2b: ${argv[0]}: not built yet (the p2b map arrives with issue #3)`);
  return 1;
}
