/**
 * Source phase 1, the handshake: the guest must be running or paused; HELLO
 * states versions, capabilities, the memory layout, the storage identity and,
 * on a plain link, the key (under TLS both ends derive it from the session); WELCOME says what the destination speaks and whether it sees the same
 * storage. References are used only if the strategy wants them, the storage
 * matches, and both sides speak them.
 */
import { LivemigError } from '../../errors.ts';
import { openBackend } from '../../storage/open.ts';
import { sampleStorage, storageVerdict } from '../storage-identity.ts';
import { queryLease } from '../../storage/disk-lease.ts';
import {
  CAPABILITIES, CAPABILITY, MAX_REF_RUN, PAGE_SIZE, PROTOCOL_NAME, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, TIMEOUT,
  requireCapabilities, shared, type Hello, type StorageIdentity,
} from '../../wire/index.ts';
import type { Guest } from '../../guest/guest.ts';
import { XBZRLE_CACHE_DEFAULT, type SourceSession } from './session.ts';
import { PageCodecs } from './page-codecs.ts';

/** Storage identity: size and keyed hashes of sampled blocks (read without taking the guest's lock). */
export async function storageIdentity(spec: string, key: Buffer): Promise<StorageIdentity> {
  const backend = await openBackend(spec, { readOnly: true, lock: false });
  try {
    return await sampleStorage(backend, spec, key);
  } finally {
    await backend.close();
  }
}

function hello(s: SourceSession, storage: StorageIdentity): Hello {
  const { guest } = s;
  return {
    protocol: PROTOCOL_NAME,
    versionMin: PROTOCOL_VERSION_MIN,
    versionMax: PROTOCOL_VERSION,
    capabilities: [...CAPABILITIES],
    guest: {
      name: guest.config.name,
      workload: guest.config.workload,
      options: { ...guest.config.options },
      memoryBytes: guest.memory.memoryBytes,
      pageSize: PAGE_SIZE,
      regions: guest.memory.layout.map((r) => ({ firstPage: r.firstPage, pages: r.pages })),
    },
    storage,
    ...(s.keyFromLink ? {} : { key: s.key.toString('hex') }),
    strategy: s.opts.strategy,
    ...(s.lease ? { lease: s.lease } : {}),
  };
}

/** The guest must be running or paused, checked before any connection: returns whether it runs. */
export async function migratable(guest: Guest): Promise<boolean> {
  const status = await guest.status();
  if (status.state !== 'running' && status.state !== 'paused') throw new LivemigError('MIGRATE_GUEST_STATE', `guest is ${status.state}`);
  return status.state === 'running';
}

export async function handshake(s: SourceSession): Promise<void> {
  const storage = await storageIdentity(s.guest.config.disk, s.key);
  const lease = await queryLease(s.guest.config.disk);
  if (lease?.holder === s.guest.leaseToken) s.lease = { token: lease.holder, epoch: lease.epoch };
  // A destination that refuses at once (busy) sends ERROR and closes: that reason, read below, beats a failed send.
  await s.channel.send({ name: 'HELLO', body: hello(s, storage) }).catch(() => {});
  s.log.debug('hello sent');
  const w = await s.channel.expect('WELCOME', TIMEOUT.WELCOME, 'destination');
  if (w.version < PROTOCOL_VERSION_MIN || w.version > PROTOCOL_VERSION) {
    throw new LivemigError('MIGRATE_VERSION', `the destination chose version ${w.version}, outside this side's ${PROTOCOL_VERSION_MIN}..${PROTOCOL_VERSION}`);
  }
  requireCapabilities(w.capabilities, 'the destination');
  if (s.lease && !shared(CAPABILITIES, w.capabilities, CAPABILITY.LEASE)) {
    throw new LivemigError('MIGRATE_CAPABILITY', `the guest's disk is leased and the destination cannot take a lease over (no ${CAPABILITY.LEASE})`);
  }
  s.welcome = w;
  s.storage = await storageVerdict(() => openBackend(s.guest.config.disk, { readOnly: true, lock: false }), s.key, w);
  s.useRefs = s.opts.strategy !== 'baseline' && s.storage.match && shared(CAPABILITIES, w.capabilities, CAPABILITY.REF);
  s.maxRun = s.useRefs && shared(CAPABILITIES, w.capabilities, CAPABILITY.REF_RUN) ? MAX_REF_RUN : 1;
  const codecs = { compress: s.opts.compress ?? 'auto', xbzrleCacheBytes: s.opts.xbzrleCacheBytes ?? XBZRLE_CACHE_DEFAULT };
  s.codecs = new PageCodecs(codecs, shared(CAPABILITIES, w.capabilities, CAPABILITY.LZ4), shared(CAPABILITIES, w.capabilities, CAPABILITY.XBZRLE));
  s.log.debug({ storageMatch: s.storage.match, useRefs: s.useRefs, maxRun: s.maxRun }, 'welcome received');
}
