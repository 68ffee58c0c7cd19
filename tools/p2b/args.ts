/** Argument handling shared by the p2b subcommands (the livemig CLI's parser and usage error). */
import { parse as parseCli } from '../../src/cli/parse.ts';
import { UsageError } from '../../src/cli/usage-error.ts';
import type { ParseArgsConfig } from 'node:util';

export { UsageError };

export function parse<T extends ParseArgsConfig['options']>(args: string[], options: T) {
  return parseCli(args, options, true);
}

export function onePositional(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected ${what}`);
  return positionals[0];
}

export function integer(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`${name} must be a non-negative integer, got ${JSON.stringify(value)}`);
  return n;
}
