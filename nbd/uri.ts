/**
 * NBD URIs as in doc/uri.md of NetworkBlockDevice/nbd:
 *   nbd://host[:port][/export]          TCP (default port 10809)
 *   nbd+unix:///export?socket=/path     Unix socket
 *   nbds://[user@]host[:port][/export]?tls-psk-file=F | tls-certificates=DIR
 *   nbds+unix://[user@]/export?socket=/path&tls-…       the same over TLS, required
 * The TLS parameters are libnbd's: tls-psk-file (identity:hexkey lines; `user` picks
 * the identity), tls-certificates (a directory with ca-cert.pem, client-cert.pem,
 * client-key.pem), tls-hostname (the name the server certificate must carry) and
 * tls-verify-peer=false. Other query parameters are refused, as the spec advises.
 */
import { NbdError } from './errors.ts';

export const DEFAULT_PORT = 10809;

export interface NbdTlsParams {
  pskFile?: string;
  certificates?: string;
  /** PSK identity, from the URI's user part. */
  username?: string;
  hostname?: string;
  verifyPeer?: boolean;
}

export type NbdAddress = (
  | { transport: 'tcp'; host: string; port: number; exportName: string }
  | { transport: 'unix'; socket: string; exportName: string }
) & { tls?: NbdTlsParams };

const TLS_PARAMS = ['tls-psk-file', 'tls-certificates', 'tls-hostname', 'tls-verify-peer'];
const EXPECTED = 'expected nbd[s]://HOST[:PORT]/EXPORT or nbd[s]+unix:///EXPORT?socket=PATH';

export function parseNbdUri(uri: string): NbdAddress {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new NbdError('NBD_BAD_URI', `not an NBD URI: ${JSON.stringify(uri)} (${EXPECTED})`);
  }
  const scheme = url.protocol.slice(0, -1);
  if (!['nbd', 'nbds', 'nbd+unix', 'nbds+unix'].includes(scheme)) {
    throw new NbdError('NBD_BAD_URI', `unsupported URI scheme ${scheme}:// (${EXPECTED})`);
  }
  const secure = scheme.startsWith('nbds');
  const unix = scheme.endsWith('+unix');
  for (const key of url.searchParams.keys()) {
    if (key === 'socket' && unix) continue;
    if (TLS_PARAMS.includes(key)) {
      if (!secure) throw new NbdError('NBD_BAD_URI', `${key}= needs a TLS URI (nbds:// or nbds+unix://): ${uri}`);
      continue;
    }
    throw new NbdError('NBD_BAD_URI', `unknown query parameter ${JSON.stringify(key)} in ${uri}`);
  }
  // The path is "/" followed by the export name, percent-encoded.
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  const tls = secure ? tlsParams(url, uri) : undefined;
  if (!unix) {
    if (!url.hostname) throw new NbdError('NBD_BAD_URI', `NBD URI has no host: ${uri}`);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = url.port ? Number(url.port) : DEFAULT_PORT;
    return { transport: 'tcp', host, port, exportName, ...(tls ? { tls } : {}) };
  }
  const socket = url.searchParams.get('socket');
  if (!socket) throw new NbdError('NBD_BAD_URI', `${scheme}:// URI needs ?socket=PATH: ${uri}`);
  if (url.hostname) throw new NbdError('NBD_BAD_URI', `${scheme}:// URI must not name a host: ${uri}`);
  return { transport: 'unix', socket, exportName, ...(tls ? { tls } : {}) };
}

function tlsParams(url: URL, uri: string): NbdTlsParams {
  const q = url.searchParams;
  const tls: NbdTlsParams = {};
  const pskFile = q.get('tls-psk-file');
  const certificates = q.get('tls-certificates');
  if (pskFile) tls.pskFile = pskFile;
  if (certificates) tls.certificates = certificates;
  if (!pskFile === !certificates) {
    throw new NbdError('NBD_BAD_URI', `a TLS URI needs exactly one of tls-psk-file= and tls-certificates=: ${uri}`);
  }
  if (url.username) tls.username = decodeURIComponent(url.username);
  const hostname = q.get('tls-hostname');
  if (hostname) tls.hostname = hostname;
  const verify = q.get('tls-verify-peer');
  if (verify !== null) {
    if (!['true', 'false', '1', '0'].includes(verify)) throw new NbdError('NBD_BAD_URI', `tls-verify-peer must be true or false: ${uri}`);
    tls.verifyPeer = verify === 'true' || verify === '1';
  }
  return tls;
}

export function formatNbdUri(address: NbdAddress): string {
  const tls = address.tls;
  const scheme = `${tls ? 'nbds' : 'nbd'}${address.transport === 'unix' ? '+unix' : ''}`;
  const user = tls?.username !== undefined ? `${encodeURIComponent(tls.username)}@` : '';
  const path = `/${encodeURIComponent(address.exportName)}`;
  const query: string[] = [];
  if (address.transport === 'unix') query.push(`socket=${encodeURIComponent(address.socket)}`);
  if (tls?.pskFile) query.push(`tls-psk-file=${encodeURIComponent(tls.pskFile)}`);
  if (tls?.certificates) query.push(`tls-certificates=${encodeURIComponent(tls.certificates)}`);
  if (tls?.hostname) query.push(`tls-hostname=${encodeURIComponent(tls.hostname)}`);
  if (tls?.verifyPeer !== undefined) query.push(`tls-verify-peer=${tls.verifyPeer}`);
  const q = query.length ? `?${query.join('&')}` : '';
  if (address.transport === 'unix') return `${scheme}://${user}${path}${q}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `${scheme}://${user}${host}:${address.port}${path}${q}`;
}

export function isNbdUri(s: string): boolean {
  return /^nbds?(\+unix)?:\/\//.test(s);
}
