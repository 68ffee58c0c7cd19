/** pino to stderr, quiet unless asked: stdout stays for results and --json. */
import { pino, type Logger } from 'pino';

export const LOG_LEVELS = ['silent', 'fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel = 'silent'): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination(2));
}
