/** tcp://HOST:PORT as the migration commands take it (the NBD listen syntax, TCP only). */
import { parseListenAddress } from '../../nbd/index.ts';

export function parseTcpAddress(s: string): { host: string; port: number } {
  const a = parseListenAddress(s);
  if (a.transport !== 'tcp') throw new Error(`bad address ${JSON.stringify(s)} (expected tcp://HOST:PORT)`);
  return { host: a.host, port: a.port };
}
