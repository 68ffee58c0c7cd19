/** The handshake messages (JSON) and the checks both sides apply to them. */
import { createHmac } from 'node:crypto';
import { PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, HASH_BYTES, WireError } from './frames.ts';

export const CAPABILITIES = ['pages.full', 'pages.zero', 'pages.ref', 'pages.ref-run', 'return-path'] as const;

export interface Hello {
  protocol: 'livemig';
  versionMin: number;
  versionMax: number;
  capabilities: string[];
  guest: { name: string; workload: string; options: Record<string, unknown>; memoryBytes: number; pageSize: number; regions: { firstPage: number; pages: number }[] };
  storage: { description: string; size: number; sample: { block: number; hash: string }[] };
  /** Fresh random key for this migration (hex, 32 bytes): keys every page hash and digest. */
  key: string;
  strategy: string;
}

export interface Welcome {
  version: number;
  capabilities: string[];
  storageMatch: boolean;
  storageReason?: string;
}

/** The version both sides speak: the highest in both windows. */
export function chooseVersion(hello: Pick<Hello, 'versionMin' | 'versionMax'>): number {
  const v = Math.min(hello.versionMax, PROTOCOL_VERSION);
  if (v < Math.max(hello.versionMin, PROTOCOL_VERSION_MIN)) {
    throw new WireError('MIGRATE_VERSION', `no common protocol version: peer speaks ${hello.versionMin}..${hello.versionMax}, this side ${PROTOCOL_VERSION_MIN}..${PROTOCOL_VERSION}`);
  }
  return v;
}

/** The keyed hash that decides page equality across hosts (HMAC-SHA-256, first 128 bits). */
export function pageHash(key: Buffer, data: Uint8Array): Buffer {
  return createHmac('sha256', key).update(data).digest().subarray(0, HASH_BYTES);
}

/** Which blocks to sample for the storage identity: spread over the disk, chosen by the key. */
export function sampleBlocks(key: Buffer, blocks: number, count = 16): number[] {
  const out: number[] = [];
  for (let i = 0; i < count && blocks > 0; i++) {
    const h = createHmac('sha256', key).update(`sample-${i}`).digest();
    out.push(Number(h.readBigUInt64BE(0) % BigInt(blocks)));
  }
  return out;
}
