/** Where a server listens: `tcp://HOST:PORT` (port 0 picks a free one) or `unix:PATH`. */
import { NbdError } from '../errors.ts';

export type ListenAddress = { transport: 'tcp'; host: string; port: number } | { transport: 'unix'; path: string };

export function parseListenAddress(s: string): ListenAddress {
  if (s.startsWith('unix:')) {
    const path = s.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');
    if (!path) throw new NbdError('NBD_INVALID_ARGUMENT', `--listen unix: needs a socket path`);
    return { transport: 'unix', path };
  }
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(s);
  if (!m) throw new NbdError('NBD_INVALID_ARGUMENT', `bad listen address ${JSON.stringify(s)} (expected tcp://HOST:PORT or unix:PATH)`);
  const port = Number(m[2]);
  if (port > 65535) throw new NbdError('NBD_INVALID_ARGUMENT', `port ${port} out of range`);
  return { transport: 'tcp', host: m[1].replace(/^\[(.*)\]$/, '$1'), port };
}
