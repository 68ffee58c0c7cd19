/**
 * Source phase 1, the handshake: the guest must be running or paused; HELLO
 * states versions, capabilities, the memory layout, the storage identity and the
 * key; WELCOME says what the destination speaks and whether it sees the same
 * storage. References are used only if the strategy wants them, the storage
 * matches, and both sides speak them.
 */
import { LivemigError } from '../../errors.ts';
import { openBackend } from '../../storage/open.ts';
import {
  CAPABILITIES, CAPABILITY, Channel, MAX_REF_RUN, PAGE_SIZE, PROTOCOL_NAME, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, TIMEOUT,
  pageHash, requireCapabilities, sampleBlocks, shared, type Hello, type StorageIdentity,
} from '../../wire/index.ts';
import { XBZRLE_CACHE_DEFAULT, type SourceSession } from './session.ts';
import { PageCodecs } from './page-codecs.ts';

/** Storage identity: size and keyed hashes of sampled blocks (read without taking the guest's lock). */
export async function storageIdentity(spec: string, key: Buffer): Promise<StorageIdentity> {
  const backend = await openBackend(spec, { readOnly: true, lock: false });
  try {
    const blocks = Math.floor(backend.size / PAGE_SIZE);
    const buf = Buffer.allocUnsafe(PAGE_SIZE);
    const sample: StorageIdentity['sample'] = [];
    for (const block of sampleBlocks(key, blocks)) {
      await backend.readInto(buf, block * PAGE_SIZE);
      sample.push({ block, hash: pageHash(key, buf).toString('hex') });
    }
    return { spec, description: backend.description, size: backend.size, sample };
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
    key: s.key.toString('hex'),
    strategy: s.opts.strategy,
  };
}

export async function handshake(s: SourceSession): Promise<void> {
  const status = await s.guest.status();
  if (status.state !== 'running' && status.state !== 'paused') throw new LivemigError('MIGRATE_GUEST_STATE', `guest is ${status.state}`);
  s.wasRunning = status.state === 'running';
  const storage = await storageIdentity(s.guest.config.disk, s.key); // before connecting: HELLO goes out at once
  s.channel = await Channel.connect(s.opts.host, s.opts.port);
  // A destination that refuses at once (busy) sends ERROR and closes: that reason, read below, beats a failed send.
  await s.channel.send({ name: 'HELLO', body: hello(s, storage) }).catch(() => {});
  s.log.debug('hello sent');
  const w = await s.channel.expect('WELCOME', TIMEOUT.WELCOME, 'destination');
  if (w.version < PROTOCOL_VERSION_MIN || w.version > PROTOCOL_VERSION) {
    throw new LivemigError('MIGRATE_VERSION', `the destination chose version ${w.version}, outside this side's ${PROTOCOL_VERSION_MIN}..${PROTOCOL_VERSION}`);
  }
  requireCapabilities(w.capabilities, 'the destination');
  s.welcome = w;
  s.useRefs = s.opts.strategy === 'p2b' && w.storageMatch && shared(CAPABILITIES, w.capabilities, CAPABILITY.REF);
  s.maxRun = s.useRefs && shared(CAPABILITIES, w.capabilities, CAPABILITY.REF_RUN) ? MAX_REF_RUN : 1;
  const codecs = { compress: s.opts.compress ?? 'auto', xbzrleCacheBytes: s.opts.xbzrleCacheBytes ?? XBZRLE_CACHE_DEFAULT };
  s.codecs = new PageCodecs(codecs, shared(CAPABILITIES, w.capabilities, CAPABILITY.LZ4), shared(CAPABILITIES, w.capabilities, CAPABILITY.XBZRLE));
  s.log.debug({ storageMatch: w.storageMatch, useRefs: s.useRefs, maxRun: s.maxRun }, 'welcome received');
}
