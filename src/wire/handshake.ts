/** The handshake's decisions, made the same way by any peer: version and capabilities. */
import { LivemigError } from '../errors.ts';
import { PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, REQUIRED_CAPABILITIES, type Capability } from './protocol.ts';

/** The version both sides speak: the highest in both windows. */
export function chooseVersion(peer: { versionMin: number; versionMax: number }): number {
  const v = Math.min(peer.versionMax, PROTOCOL_VERSION);
  if (v < Math.max(peer.versionMin, PROTOCOL_VERSION_MIN)) {
    throw new LivemigError('MIGRATE_VERSION', `no common protocol version: peer speaks ${peer.versionMin}..${peer.versionMax}, this side ${PROTOCOL_VERSION_MIN}..${PROTOCOL_VERSION}`);
  }
  return v;
}

/** Refuses a peer that lacks a capability every peer must have. */
export function requireCapabilities(peer: readonly string[], who: string): void {
  const missing = REQUIRED_CAPABILITIES.filter((c) => !peer.includes(c));
  if (missing.length) throw new LivemigError('MIGRATE_CAPABILITY', `${who} lacks ${missing.join(', ')}`);
}

/** Whether both sides listed a capability (a side uses an optional one only then). */
export function shared(mine: readonly string[], theirs: readonly string[], c: Capability): boolean {
  return mine.includes(c) && theirs.includes(c);
}

/** The migration key: under TLS the session's, and HELLO must not carry one; on a plain link HELLO carries it. */
export function migrationKey(linkKey: Buffer | undefined | null, hello: { key?: string }): Buffer {
  if (linkKey && hello.key !== undefined) throw new LivemigError('MIGRATE_PROTOCOL', 'HELLO carries a key on a TLS link, where the key comes from the session');
  if (linkKey) return linkKey;
  if (hello.key === undefined) throw new LivemigError('MIGRATE_PROTOCOL', 'HELLO carries no key on a link without TLS');
  return Buffer.from(hello.key, 'hex');
}
