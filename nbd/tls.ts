/**
 * TLS credentials as QEMU and nbdkit keep them, and the socket upgrades that
 * NBD_OPT_STARTTLS asks for. Nothing here is NBD-specific beyond the file names,
 * so other protocols (the migration link) can load and use the same credentials.
 *
 *   x509: a directory as QEMU's tls-creds-x509 reads it: ca-cert.pem, and
 *         server-cert.pem + server-key.pem (server end) or client-cert.pem +
 *         client-key.pem (client end). Each end verifies the other's certificate
 *         against ca-cert.pem.
 *   psk:  a file of `identity:hexkey` lines, as psktool writes them and nbdkit
 *         (--tls-psk) and QEMU (tls-creds-psk, keys.psk) read them.
 *
 * Sessions are TLS 1.3 where the peer speaks it, else 1.2 (which the NBD spec
 * requires of everyone). Node's PSK callbacks are OpenSSL's pre-1.3 ones, which
 * OpenSSL also uses for TLS 1.3 with SHA-256 cipher suites only: PSK offers
 * those two and the TLS 1.2 PSK suites. GnuTLS (nbdkit, qemu-nbd, libnbd)
 * negotiates TLS 1.3 with TLS_AES_128_GCM_SHA256 against it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import tls, { type TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import { NbdError } from './errors.ts';

export type TlsEnd = 'server' | 'client';

export type TlsCredentials =
  | { kind: 'x509'; ca: Buffer; cert: Buffer; key: Buffer; source: string }
  | { kind: 'psk'; keys: Map<string, Buffer>; source: string };

/** PSK suites that GnuTLS (nbdkit, qemu-nbd, libnbd) and OpenSSL (Node) share: TLS 1.3 (SHA-256 only), then TLS 1.2. */
const PSK_CIPHERS = [
  'TLS_AES_128_GCM_SHA256', 'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-PSK-CHACHA20-POLY1305', 'ECDHE-PSK-AES256-CBC-SHA384', 'ECDHE-PSK-AES128-CBC-SHA256',
  'DHE-PSK-AES256-GCM-SHA384', 'DHE-PSK-AES128-GCM-SHA256', 'DHE-PSK-CHACHA20-POLY1305',
  'PSK-AES256-GCM-SHA384', 'PSK-AES128-GCM-SHA256', 'PSK-CHACHA20-POLY1305',
].join(':');
/** Longest PSK identity we accept (RFC 4279 allows 2^16, psktool writes short names). */
const MAX_IDENTITY = 128;

function readCredentialFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new NbdError('NBD_TLS_CONFIG', `cannot read ${what} ${path}: ${e.code ?? e.message}`, { cause: err });
  }
}

/** An x509 credentials directory, for one end of the connection. */
export function loadX509(dir: string, end: TlsEnd): TlsCredentials {
  return {
    kind: 'x509',
    ca: readCredentialFile(join(dir, 'ca-cert.pem'), 'CA certificate'),
    cert: readCredentialFile(join(dir, `${end}-cert.pem`), `${end} certificate`),
    key: readCredentialFile(join(dir, `${end}-key.pem`), `${end} key`),
    source: dir,
  };
}

/** A PSK file: one `identity:hexkey` per line; blank lines and `#` comments are skipped. */
export function loadPsk(file: string): TlsCredentials {
  const keys = new Map<string, Buffer>();
  const lines = readCredentialFile(file, 'PSK file').toString('utf8').split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const colon = line.lastIndexOf(':');
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || identity.length > MAX_IDENTITY || !/^([0-9a-fA-F]{2}){16,}$/.test(hex)) {
      throw new NbdError('NBD_TLS_CONFIG', `${file} line ${i + 1}: expected IDENTITY:HEXKEY with a key of at least 16 bytes`);
    }
    keys.set(identity, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw new NbdError('NBD_TLS_CONFIG', `${file}: no keys (expected IDENTITY:HEXKEY lines)`);
  return { kind: 'psk', keys, source: file };
}

export interface ClientTlsParams {
  credentials: TlsCredentials;
  /** PSK identity; default: the file's only identity (required when it has several). */
  identity?: string;
  /** Name the server's certificate must carry; absent: the chain alone is verified. */
  servername?: string;
  /** false: accept any server certificate (x509 only; default true). */
  verifyPeer?: boolean;
}

/** The PSK identity a client presents. */
export function clientIdentity(params: ClientTlsParams): string {
  const c = params.credentials;
  if (c.kind !== 'psk') throw new NbdError('NBD_TLS_CONFIG', 'a PSK identity needs PSK credentials');
  if (params.identity !== undefined) {
    if (!c.keys.has(params.identity)) throw new NbdError('NBD_TLS_CONFIG', `${c.source} has no key for identity ${JSON.stringify(params.identity)}`);
    return params.identity;
  }
  if (c.keys.size !== 1) throw new NbdError('NBD_TLS_CONFIG', `${c.source} holds ${c.keys.size} identities: name one (user@ in the URI)`);
  return [...c.keys.keys()][0];
}

function serverOptions(c: TlsCredentials): tls.TlsOptions {
  if (c.kind === 'x509') return { ca: c.ca, cert: c.cert, key: c.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' };
  const keys = c.keys;
  return { ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2', pskCallback: (_socket, identity) => keys.get(identity) ?? null };
}

function clientOptions(p: ClientTlsParams): tls.ConnectionOptions {
  const c = p.credentials;
  if (c.kind === 'psk') {
    const identity = clientIdentity(p);
    const psk = c.keys.get(identity)!;
    return { ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2', pskCallback: () => ({ psk, identity }), checkServerIdentity: () => undefined };
  }
  return {
    ca: c.ca,
    cert: c.cert,
    key: c.key,
    minVersion: 'TLSv1.2',
    rejectUnauthorized: p.verifyPeer !== false,
    servername: p.servername && !isIp(p.servername) ? p.servername : undefined,
    // Without a name to check (a Unix socket), the chain to ca-cert.pem is what authenticates.
    checkServerIdentity: p.servername ? (_host, cert) => tls.checkServerIdentity(p.servername!, cert) : () => undefined,
  };
}

const isIp = (s: string) => /^[\d.]+$/.test(s) || s.includes(':');

/** Why a handshake failed, in one line. */
function handshakeError(peer: string, err: Error): NbdError {
  const e = err as NodeJS.ErrnoException & { reason?: string };
  const reason = e.code === 'ECONNRESET' || e.message === 'socket hang up' ? 'the peer closed the connection (wrong key or certificate?)' : e.reason ?? e.message;
  return new NbdError('NBD_TLS', `TLS handshake with ${peer} failed: ${reason}`, { cause: err });
}

function settle(socket: TLSSocket, event: 'secure' | 'secureConnect', peer: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const fail = (err: Error) => {
      socket.off(event, ok);
      socket.destroy();
      reject(handshakeError(peer, err));
    };
    const closed = () => fail(new Error('socket hang up'));
    const ok = () => {
      socket.off('error', fail);
      socket.off('close', closed);
      resolve(socket);
    };
    socket.once(event, ok);
    socket.once('error', fail);
    socket.once('close', closed);
  });
}

/**
 * Runs the server's side of the handshake on a connected socket; an x509 client
 * must present a certificate the CA signed. The socket goes through a one-off
 * tls.Server (never listening): the public way to get its verification and
 * rejection of unauthorized clients on a socket that is already connected.
 */
export function startServerTls(socket: Socket, credentials: TlsCredentials, peer = 'client'): Promise<TLSSocket> {
  const server = tls.createServer(serverOptions(credentials));
  return new Promise((resolve, reject) => {
    const done = () => {
      socket.off('close', closed);
      server.removeAllListeners();
    };
    const closed = () => {
      done();
      reject(handshakeError(peer, new Error('socket hang up')));
    };
    server.once('secureConnection', (secure: TLSSocket) => {
      done();
      resolve(secure);
    });
    server.once('tlsClientError', (err: Error, secure: TLSSocket) => {
      done();
      secure.destroy();
      reject(handshakeError(peer, err));
    });
    socket.once('close', closed);
    server.emit('connection', socket);
  });
}

/** Runs the client's side of the handshake on a connected socket. */
export function startClientTls(socket: Socket, params: ClientTlsParams, peer = 'server'): Promise<TLSSocket> {
  return settle(tls.connect({ socket, ...clientOptions(params) }), 'secureConnect', peer);
}
