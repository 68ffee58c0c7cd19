/** Thin wrapper over node:util parseArgs that turns its errors into UsageError. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './usage-error.ts';
import { LOG_LEVELS, type LogLevel } from '../log/logger.ts';
import { parseSize } from '../util/size.ts';

export const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  'log-level': { type: 'string' },
} as const;

export function parse<T extends ParseArgsConfig['options']>(args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args, options: { ...COMMON_OPTIONS, ...options }, allowPositionals, strict: true, tokens: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

export function logLevel(value: string | undefined): LogLevel {
  if (value === undefined) return 'silent';
  if (!(LOG_LEVELS as readonly string[]).includes(value)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  return value as LogLevel;
}

export function sizeOption(name: string, value: string): number {
  const n = parseSize(value);
  if (n === null || n <= 0) throw new UsageError(`${name}: not a size: ${JSON.stringify(value)} (examples: 4096, 256MiB, 1GiB)`);
  return n;
}

/** Runs a parser from a lower layer; its complaint about user text becomes a usage error. */
export function asUsage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
