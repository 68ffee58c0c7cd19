/**
 * Destination phase 1, the handshake: HELLO is read under a time limit and
 * validated, the guest must fit this host's limits, this destination's own disk
 * is opened (read-only, for the fetch queue) and sampled: a source migrating
 * another disk is refused. Only then is memory taken and WELCOME sent. The
 * guest's worker starts meanwhile, paused, without disk or workload: at the
 * end only the device state and the disk remain to hand over.
 */
import os from 'node:os';
import { LivemigError } from '../../errors.ts';
import { Guest } from '../../guest/guest.ts';
import { GuestMemory } from '../../guest/memory.ts';
import { P2bMap } from '../../p2b/map.ts';
import { openBackend } from '../../storage/open.ts';
import { CAPABILITIES, PAGE_SIZE, TIMEOUT, chooseVersion, migrationKey, requireCapabilities, type Hello } from '../../wire/index.ts';
import { checkStorage, welcomeStorage } from '../storage-identity.ts';
import type { DestinationSession } from './session.ts';

/** Refuses a guest this destination cannot hold, before anything is allocated for it. */
function checkFits(s: DestinationSession, hello: Hello): void {
  const bytes = hello.guest.memoryBytes;
  if (hello.guest.pageSize !== PAGE_SIZE) throw new LivemigError('MIGRATE_LAYOUT', `page size ${hello.guest.pageSize} is not ${PAGE_SIZE}`);
  if (s.ready && s.ready.memory.memoryBytes !== bytes) {
    throw new LivemigError('MIGRATE_LAYOUT', `this destination was prepared for ${s.ready.memory.memoryBytes} bytes of memory; the guest has ${bytes}`);
  }
  const limit = Math.min(s.opts.maxMemoryBytes ?? Infinity, os.totalmem());
  if (!s.ready && bytes > limit) throw new LivemigError('MIGRATE_LAYOUT', `the guest's ${bytes} bytes of memory exceed this destination's limit of ${limit}`);
}

/** Opens this destination's own disk, never one HELLO names, and checks it is the source's. */
async function openStorage(s: DestinationSession): Promise<void> {
  const disk = s.opts.disk;
  s.storage = await openBackend(disk, { readOnly: true, lock: false }).catch((e: Error) => {
    throw new LivemigError('MIGRATE_STORAGE', `cannot open the guest's disk ${disk} here: ${e.message}`);
  });
  const c = await checkStorage(s.storage, s.key, s.hello.storage);
  if (c.other) {
    const here = `${s.storage.description} (${s.storage.size} bytes)`;
    throw new LivemigError('MIGRATE_STORAGE', `the source migrates ${s.hello.storage.description}, not this destination's disk ${here}: ${c.reason}`);
  }
  s.storageCheck = c;
}

/** Starts the guest's worker, paused, with no disk or workload yet. */
function startGuest(s: DestinationSession): void {
  const { hello } = s;
  s.starting = Guest.start({
    name: hello.guest.name,
    memoryBytes: hello.guest.memoryBytes,
    disk: s.opts.disk,
    workload: hello.guest.workload,
    options: hello.guest.options as unknown as Guest['config']['options'],
    stateDir: s.opts.stateDir(hello.guest.name),
    memory: s.memory,
    map: s.map,
    deferDevice: true,
    freshMap: true,
    spareWorker: s.ready?.worker,
  });
  s.starting.then(
    (g) => ((s.guest = g), s.log.debug('guest worker ready')),
    (e: Error) => ((s.startFailure = e), s.notify()),
  );
}

export async function handshake(s: DestinationSession): Promise<void> {
  s.setState('handshake');
  s.channel.only(['HELLO']);
  const hello = await s.channel.expect('HELLO', s.opts.helloTimeoutMs ?? TIMEOUT.HELLO, 'source');
  const version = chooseVersion(hello);
  requireCapabilities(hello.capabilities, 'the source');
  checkFits(s, hello);
  s.hello = hello;
  s.key = migrationKey(s.linkKey, hello);
  await openStorage(s);
  s.memory = s.ready?.memory ?? GuestMemory.allocate(hello.guest.memoryBytes);
  s.map = s.ready?.map ?? P2bMap.allocate(s.memory.pages);
  s.channel.memoryBytes = hello.guest.memoryBytes;
  const c = s.storageCheck;
  await s.channel.send({ name: 'WELCOME', body: { version, capabilities: [...(s.opts.capabilities ?? CAPABILITIES)], ...welcomeStorage(c) } });
  s.log.debug({ version, storageMatch: c.match }, 'welcome sent');
  startGuest(s);
}
