/**
 * TLS credentials for tests, made with openssl: an x509 directory laid out as
 * QEMU's tls-creds-x509 and nbdkit's --tls-certificates read it (ca-cert.pem,
 * server-cert.pem, server-key.pem, client-cert.pem, client-key.pem), and PSK
 * files of `identity:hexkey` lines (nbdkit --tls-psk; QEMU wants it as keys.psk).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

const openssl = (dir: string, ...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });

/** Extensions GnuTLS (QEMU checks them strictly) expects of a CA and of each end's certificate. */
const CONFIG = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
`;

/** A CA and a server and a client certificate signed by it, in `dir`. */
export function makeX509Dir(dir: string, name = 'livemig-test'): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'ext.cnf'), CONFIG);
  const rsa = (key: string) => openssl(dir, 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', key);
  rsa('ca-key.pem');
  openssl(dir, 'req', '-x509', '-new', '-key', 'ca-key.pem', '-subj', `/CN=${name} CA`, '-days', '2', '-out', 'ca-cert.pem',
    '-config', 'ext.cnf', '-extensions', 'ca');
  for (const end of ['server', 'client']) {
    rsa(`${end}-key.pem`);
    openssl(dir, 'req', '-new', '-key', `${end}-key.pem`, '-subj', `/O=${name}/CN=${end === 'server' ? 'localhost' : `${name} client`}`, '-out', `${end}.csr`, '-config', 'ext.cnf');
    openssl(dir, 'x509', '-req', '-in', `${end}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', '2',
      '-out', `${end}-cert.pem`, '-extfile', 'ext.cnf', '-extensions', end);
  }
  return dir;
}

/** A PSK file with one identity (or several), and returns its path. */
export function makePskFile(path: string, identities: Record<string, Buffer> = { alice: randomBytes(32) }): string {
  writeFileSync(path, Object.entries(identities).map(([id, key]) => `${id}:${key.toString('hex')}\n`).join(''), { mode: 0o600 });
  return path;
}

/** QEMU's tls-creds-psk reads `keys.psk` from a directory. */
export function pskDirFor(pskFile: string, dir: string): string {
  mkdirSync(dir, { recursive: true });
  copyFileSync(pskFile, join(dir, 'keys.psk'));
  return dir;
}
