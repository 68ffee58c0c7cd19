/** Thin wrapper over node:util parseArgs that turns its errors into UsageError. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './usage-error.ts';
import { LOG_LEVELS, type LogLevel } from '../log/logger.ts';
import { parseSize, parseRate, parseDuration } from '../util/size.ts';
import { WORKLOADS } from '../guest/workloads/registry.ts';
import { STRATEGIES, type Strategy } from '../migrate/result.ts';

export const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  'log-level': { type: 'string' },
} as const;

export function parse<T extends ParseArgsConfig['options']>(args: string[], options: T, allowPositionals = false) {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...COMMON_OPTIONS, ...options }, allowPositionals, strict: true, tokens: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
  logLevel((parsed.values as Record<string, unknown>)['log-level'] as string | undefined); // every command refuses a level pino does not know
  return parsed;
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

export function rateOption(name: string, value: string): number {
  const n = parseRate(value);
  if (n === null) throw new UsageError(`${name}: not a rate: ${value} (examples: 1Gbit, 500Mbit, 100MiB)`);
  return n;
}

export function durationOption(name: string, value: string): number {
  const n = parseDuration(value);
  if (n === null) throw new UsageError(`${name}: not a duration: ${value} (examples: 300, 300ms, 0.5s)`);
  return n;
}

export function strategyOption(value: string): Strategy {
  if (!(STRATEGIES as string[]).includes(value)) throw new UsageError(`--strategy must be one of ${STRATEGIES.join(', ')}`);
  return value as Strategy;
}

export function workloadOption(value: string): string {
  if (!WORKLOADS[value]) throw new UsageError(`unknown workload ${JSON.stringify(value)} (have: ${Object.keys(WORKLOADS).join(', ')})`);
  return value;
}
