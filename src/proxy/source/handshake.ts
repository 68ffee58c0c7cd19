/**
 * The source proxy's handshake, once QEMU's stream has declared its RAM blocks: HELLO
 * names the stream (kind qemu, format, RAM blocks), the guest's memory as those blocks
 * in whole pages, the storage identity and the key; WELCOME must list qemu-stream.
 * References are used only if there is a content index, the destination sees the same
 * disk, and it listed qemu-stream (which carries REF_RUN).
 */
import { LivemigError } from '../../errors.ts';
import { sampleStorage, storageVerdict } from '../../migrate/storage-identity.ts';
import { openBackend } from '../../storage/open.ts';
import {
  CAPABILITY, PAGE_SIZE, type Channel, PROTOCOL_NAME, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, QEMU_PROXY_CAPABILITIES, QEMU_STREAM_FORMAT,
  REGION_PAGES, STREAM_KIND_QEMU, TIMEOUT, connectLink, type Hello,
} from '../../wire/index.ts';
import type { SourceProxySession } from './session.ts';
import { tellDestination } from './failure.ts';

/** The disk's identity under this migration's key, and its size in blocks. */
export async function sampleDisk(s: SourceProxySession): Promise<void> {
  const disk = await openBackend(s.opts.disk, { readOnly: true, lock: false }).catch((e: Error) => {
    throw new LivemigError('MIGRATE_STORAGE', `cannot open the guest's disk ${s.opts.disk}: ${e.message}`);
  });
  try {
    s.identity = await sampleStorage(disk, s.opts.disk, s.key);
    s.diskBlocks = Math.floor(disk.size / PAGE_SIZE);
  } finally {
    await disk.close();
  }
}

/** The link to the destination proxy; under TLS its session's key replaces the one made at start-up (HELLO then carries none). */
async function connect(s: SourceProxySession): Promise<Channel> {
  const link = await connectLink({ transport: 'tcp', ...s.opts.to }, s.opts.security);
  s.channel = link.channel;
  if (!link.key) return link.channel;
  s.key = link.key;
  s.keyFromLink = true;
  s.hasher.setKey(link.key);
  await sampleDisk(s);
  return link.channel;
}

function hello(s: SourceProxySession): Hello {
  const pages = s.ramBlocks.reduce((n, b) => n + Math.ceil(b.bytes / PAGE_SIZE), 0);
  const regions = [];
  for (let first = 0; first < pages; first += REGION_PAGES) regions.push({ firstPage: first, pages: Math.min(REGION_PAGES, pages - first) });
  return {
    protocol: PROTOCOL_NAME,
    versionMin: PROTOCOL_VERSION_MIN,
    versionMax: PROTOCOL_VERSION,
    capabilities: [...QEMU_PROXY_CAPABILITIES],
    guest: { name: s.opts.name, workload: 'qemu', options: { machine: s.machine }, memoryBytes: pages * PAGE_SIZE, pageSize: PAGE_SIZE, regions },
    storage: s.identity,
    ...(s.keyFromLink ? {} : { key: s.key.toString('hex') }),
    strategy: s.opts.index ? 'p2b' : 'baseline',
    stream: { kind: STREAM_KIND_QEMU, format: QEMU_STREAM_FORMAT, ramBlocks: s.ramBlocks },
  };
}

export async function handshake(s: SourceProxySession): Promise<void> {
  if (s.ramBlocks.length === 0) throw new LivemigError('QEMU_STREAM_MALFORMED', "QEMU's stream declared no RAM blocks");
  const channel = await connect(s);
  if (s.failure) return tellDestination(s); // the stream failed while connecting: the destination hears it instead of HELLO
  await channel.send({ name: 'HELLO', body: hello(s) });
  const w = await channel.expect('WELCOME', TIMEOUT.WELCOME, 'destination proxy');
  if (w.version < PROTOCOL_VERSION_MIN || w.version > PROTOCOL_VERSION) {
    throw new LivemigError('MIGRATE_VERSION', `the destination chose version ${w.version}, outside this side's ${PROTOCOL_VERSION_MIN}..${PROTOCOL_VERSION}`);
  }
  const missing = QEMU_PROXY_CAPABILITIES.filter((c) => !w.capabilities.includes(c));
  if (missing.length) throw new LivemigError('MIGRATE_CAPABILITY', `the destination is not a QEMU stream proxy: it lacks ${missing.join(', ')} (start it with 'livemig qemu-proxy --listen')`);
  if (s.failure) return tellDestination(s);
  s.welcome = w;
  s.storage = await storageVerdict(() => openBackend(s.opts.disk, { readOnly: true, lock: false }), s.key, w);
  s.useRefs = s.index !== null && s.storage.match && w.capabilities.includes(CAPABILITY.QEMU_STREAM);
  s.log.info({ storageMatch: s.storage.match, storageReason: s.storage.reason, useRefs: s.useRefs }, 'welcome received');
  if (!s.storage.match) s.log.warn(`the destination does not see the same disk (${s.storage.reason}): sending every page in full`);
}
