/**
 * The credentials of a migration link, QEMU-style: an x509 directory (ca-cert.pem,
 * server-cert.pem, server-key.pem, client-cert.pem, client-key.pem; both ends
 * verified) or a PSK file of `identity:hexkey` lines. The key for page hashes and
 * digests is derived from the TLS session on both ends (RFC 5705 exporter), so it
 * never travels on the wire.
 */
import type { TLSSocket } from 'node:tls';
import { loadPsk, loadX509, type TlsCredentials, type TlsEnd } from '../../../nbd/index.ts';
import { LivemigError } from '../../errors.ts';

/** Where the credentials are, as the user names them (--tls-creds DIR or --tls-psk FILE). */
export interface LinkCredentialPaths {
  tlsCreds?: string;
  tlsPsk?: string;
}

export interface LinkSecurity {
  credentials: TlsCredentials;
}

/** The exporter label both ends derive the migration key with. */
export const KEY_EXPORTER_LABEL = 'EXPORTER-livemig-migration-key';
export const KEY_EXPORTER_BYTES = 32;

/** Loads one end's credentials; null if none were named (a plain link). */
export function loadLinkSecurity(paths: LinkCredentialPaths, end: TlsEnd): LinkSecurity | null {
  if (paths.tlsCreds && paths.tlsPsk) throw new LivemigError('MIGRATE_TLS_CONFIG', 'give --tls-creds or --tls-psk, not both');
  try {
    if (paths.tlsCreds) return { credentials: loadX509(paths.tlsCreds, end) };
    if (paths.tlsPsk) return { credentials: loadPsk(paths.tlsPsk) };
  } catch (err) {
    throw new LivemigError('MIGRATE_TLS_CONFIG', (err as Error).message, { cause: err });
  }
  return null;
}

/** The migration key of an established TLS session: the same bytes on both ends, never on the wire. */
export function sessionKey(socket: TLSSocket): Buffer {
  return socket.exportKeyingMaterial(KEY_EXPORTER_BYTES, KEY_EXPORTER_LABEL, Buffer.alloc(0));
}
