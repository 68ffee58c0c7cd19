/**
 * NBD URIs as in doc/uri.md of NetworkBlockDevice/nbd:
 *   nbd://host[:port][/export]          TCP (default port 10809)
 *   nbd+unix:///export?socket=/path     Unix socket
 * TLS schemes (nbds://, nbds+unix://) are recognised and refused: livemig speaks no TLS yet.
 */
import { NbdError } from './errors.ts';

export const DEFAULT_PORT = 10809;

export type NbdAddress =
  | { transport: 'tcp'; host: string; port: number; exportName: string }
  | { transport: 'unix'; socket: string; exportName: string };

export function parseNbdUri(uri: string): NbdAddress {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new NbdError('NBD_BAD_URI', `not an NBD URI: ${JSON.stringify(uri)} (expected nbd://host[:port]/export or nbd+unix:///export?socket=PATH)`);
  }
  const scheme = url.protocol.slice(0, -1);
  if (scheme === 'nbds' || scheme === 'nbds+unix') {
    throw new NbdError('NBD_BAD_URI', `${scheme}:// needs TLS, which livemig does not support yet`);
  }
  // The path is "/" followed by the export name, percent-encoded.
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (scheme === 'nbd') {
    if (!url.hostname) throw new NbdError('NBD_BAD_URI', `NBD URI has no host: ${uri}`);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = url.port ? Number(url.port) : DEFAULT_PORT;
    return { transport: 'tcp', host, port, exportName };
  }
  if (scheme === 'nbd+unix') {
    const socket = url.searchParams.get('socket');
    if (!socket) throw new NbdError('NBD_BAD_URI', `nbd+unix:// URI needs ?socket=PATH: ${uri}`);
    if (url.hostname) throw new NbdError('NBD_BAD_URI', `nbd+unix:// URI must not name a host: ${uri}`);
    return { transport: 'unix', socket, exportName };
  }
  throw new NbdError('NBD_BAD_URI', `unsupported URI scheme ${scheme}:// (expected nbd:// or nbd+unix://)`);
}

export function formatNbdUri(address: NbdAddress): string {
  const path = `/${encodeURIComponent(address.exportName)}`;
  if (address.transport === 'unix') return `nbd+unix://${path}?socket=${encodeURIComponent(address.socket)}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}${path}`;
}

export function isNbdUri(s: string): boolean {
  return /^nbds?(\+unix)?:\/\//.test(s);
}
