/**
 * Credentials for a fuzzed destination that has them (`--tls psk|x509`), and the
 * wrong ones that hostile peers bring: another key or identity, no credentials,
 * a certificate of another CA, a self-signed one, the server's own certificate
 * offered as a client's. Each intruder is a set of options for a real TLS client
 * (intruder.ts); none of them may get past the destination's handshake.
 */
import type { ConnectionOptions } from 'node:tls';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadLinkSecurity, type LinkSecurity } from '../../src/wire/index.ts';
// The tests' openssl recipe (QEMU's file names and extensions): one recipe for tests and benchmarks.
import { makePskFile, makeX509Dir } from '../../test/helpers/tls-creds.ts';

export type TlsMode = 'psk' | 'x509';

export interface Intruder {
  name: string;
  options: ConnectionOptions;
}

export interface FuzzCredentials {
  mode: TlsMode;
  /** For `livemig run --incoming`. */
  targetArgs: string[];
  /** The source that is let in (the health migration). */
  source: LinkSecurity;
  /** A legitimate client's options, whose ClientHello hostile peers replay and mutate. */
  legitimate: ConnectionOptions;
  intruders: Intruder[];
}

const IDENTITY = 'livemig';
/** PSK suites Node offers (TLS 1.3 SHA-256 suites, then TLS 1.2 PSK ones). */
const PSK13 = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';
const PSK12 = 'ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES128-GCM-SHA256:PSK-AES128-GCM-SHA256';
const anyServer = { checkServerIdentity: () => undefined, rejectUnauthorized: false };

const pskClient = (identity: string, psk: Buffer, tls12 = false): ConnectionOptions => ({
  ...anyServer,
  ciphers: tls12 ? PSK12 : `${PSK13}:${PSK12}`,
  minVersion: 'TLSv1.2',
  maxVersion: tls12 ? 'TLSv1.2' : 'TLSv1.3',
  pskCallback: () => ({ psk, identity }),
});

const certClient = (dir: string, cert: string, key: string): ConnectionOptions => ({
  ...anyServer,
  cert: readFileSync(join(dir, cert)),
  key: readFileSync(join(dir, key)),
});

function pskCredentials(dir: string): FuzzCredentials {
  const key = randomBytes(32);
  const file = makePskFile(join(dir, 'keys.psk'), { [IDENTITY]: key });
  return {
    mode: 'psk',
    targetArgs: ['--tls-psk', file],
    source: loadLinkSecurity({ tlsPsk: file }, 'client')!,
    legitimate: pskClient(IDENTITY, key),
    intruders: [
      { name: 'wrong-key', options: pskClient(IDENTITY, randomBytes(32)) },
      { name: 'wrong-key-tls1.2', options: pskClient(IDENTITY, randomBytes(32), true) },
      { name: 'wrong-identity', options: pskClient('mallory', randomBytes(32)) },
      { name: 'no-credentials', options: { ...anyServer } },
    ],
  };
}

function x509Credentials(dir: string): FuzzCredentials {
  const creds = makeX509Dir(join(dir, 'x509'));
  const stranger = makeX509Dir(join(dir, 'stranger'), 'stranger');
  return {
    mode: 'x509',
    targetArgs: ['--tls-creds', creds],
    source: loadLinkSecurity({ tlsCreds: creds }, 'client')!,
    legitimate: { ...certClient(creds, 'client-cert.pem', 'client-key.pem'), ca: readFileSync(join(creds, 'ca-cert.pem')) },
    intruders: [
      { name: 'other-ca', options: certClient(stranger, 'client-cert.pem', 'client-key.pem') },
      { name: 'self-signed', options: certClient(stranger, 'ca-cert.pem', 'ca-key.pem') },
      { name: 'server-cert-as-client', options: certClient(creds, 'server-cert.pem', 'server-key.pem') },
      { name: 'no-certificate', options: { ...anyServer } },
      { name: 'psk', options: pskClient(IDENTITY, randomBytes(32)) },
    ],
  };
}

/** Makes the destination's credentials in `dir` (x509 needs openssl). */
export function makeFuzzCredentials(mode: TlsMode, dir: string): FuzzCredentials {
  mkdirSync(dir, { recursive: true });
  return mode === 'psk' ? pskCredentials(dir) : x509Credentials(dir);
}
