/** The `livemig` command: dispatch, help, and the error contract (exit 0/1/2, one line on stderr). */
import { readFileSync } from 'node:fs';
import { UsageError } from './usage-error.ts';
import { createLogger } from '../log/logger.ts';
import * as nbdServe from './commands/nbd-serve.ts';
import * as nbdInfo from './commands/nbd-info.ts';
import * as demo from './commands/demo.ts';
import * as runGuest from './commands/run.ts';
import * as migrateCmd from './commands/migrate.ts';
import { verb } from './commands/control.ts';
import * as guestImage from './commands/guest-image.ts';
import * as qemuProxy from './commands/qemu-proxy.ts';

type Command = (args: string[]) => Promise<number>;

const COMMANDS: Record<string, { run: Command; summary: string }> = {
  demo: { run: demo.run, summary: 'run a whole live migration on this machine, with a summary' },
  run: { run: runGuest.run, summary: 'start an emulated guest with a control socket (--incoming: wait for one)' },
  migrate: { run: migrateCmd.run, summary: 'live-migrate a guest to a destination waiting with run --incoming' },
  status: { run: verb('status'), summary: 'show a guest: state, workload, disk I/O, p2b map' },
  pause: { run: verb('pause'), summary: 'pause a guest at a safe point (disk flushed, map saved)' },
  resume: { run: verb('resume'), summary: 'resume a paused guest' },
  throttle: { run: verb('throttle'), summary: 'slow a guest\'s workload by PERCENT (0-99)' },
  'dump-memory': { run: verb('dump-memory'), summary: 'write guest memory to an image (for p2b verify)' },
  fingerprint: { run: verb('fingerprint'), summary: 'SHA-256 of every MiB of a paused guest\'s memory, to compare hosts' },
  stop: { run: verb('stop'), summary: 'stop a guest (map flushed and marked clean)' },
  'nbd serve': { run: nbdServe.run, summary: 'serve files or memory over NBD' },
  'nbd info': { run: nbdInfo.runInfo, summary: 'show an NBD export: size, flags, block sizes' },
  'nbd list': { run: nbdInfo.runList, summary: 'list the exports of an NBD server' },
  'guest-image': { run: guestImage.run, summary: 'build a QEMU test guest: kernel, busybox initramfs, ext4 disk of real files' },
  'qemu-proxy': { run: qemuProxy.run, summary: "carry a stock QEMU guest's migration stream, page-cache pages as block references" },
};

const HELP = `livemig — live migration of virtual machines on shared storage

Usage: livemig COMMAND [options]     (livemig COMMAND --help for details)

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`).join('\n')}

Common options: --json (machine-readable output), --log-level LEVEL (pino log on stderr).
Exit codes: 0 success, 1 failure at run time, 2 bad usage.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    console.log(HELP);
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === '--version') {
    console.log(version());
    return 0;
  }
  const two = argv.slice(0, 2).join(' ');
  const [name, rest] = COMMANDS[two] ? [two, argv.slice(2)] : [argv[0], argv.slice(1)];
  const command = COMMANDS[name];
  if (!command) {
    const group = Object.keys(COMMANDS).filter((n) => n.startsWith(`${argv[0]} `));
    const hint = group.length ? `; did you mean one of: ${group.join(', ')}` : '';
    return fail(new UsageError(`unknown command ${JSON.stringify(argv.slice(0, group.length ? 2 : 1).join(' '))}${hint}`), argv);
  }
  try {
    return await command.run(rest);
  } catch (err) {
    return fail(err, argv);
  }
}

function fail(err: unknown, argv: string[]): number {
  const e = err as Error & { code?: string };
  if (err instanceof UsageError) {
    console.error(`livemig: ${e.message}`);
    console.error(`Try 'livemig ${argv[0] ?? ''} --help'.`.replace('  ', ' '));
    return 2;
  }
  const code = typeof e.code === 'string' ? ` [${e.code}]` : '';
  console.error(`livemig: ${e.message}${code}`);
  // The stack, for whoever asked for the log: --log-level debug or trace.
  const level = argv[argv.indexOf('--log-level') + 1];
  if (argv.includes('--log-level') && (level === 'debug' || level === 'trace')) createLogger(level).error({ err }, 'failed');
  return 1;
}
