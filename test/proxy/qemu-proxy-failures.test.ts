/**
 * Every way a proxied migration can break ends it, in bounded time, with one line
 * naming a stable code, and the source QEMU fails its migration and runs its guest
 * on: the destination proxy or QEMU killed mid-stream, the storage gone (at the
 * handshake or mid-stream), the source QEMU killed, bytes that are no QEMU stream,
 * and a stream using a capability livemig cannot carry.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { setCapabilities, startMigration } from '../../src/qemu/migration-control.ts';
import { tempDir } from '../helpers/processes.ts';
import { startNbdServe } from '../helpers/nbd-serve.ts';
import { haveTool, requireTools } from '../helpers/tools.ts';
import { bootTestGuest, QEMU_TOOLS, type TestGuest } from '../helpers/qemu-guest.ts';
import { failsWith, sourceFailedAndRuns, startDestination, startProxy, startSource, stopAll, transferred } from '../helpers/qemu-proxy.ts';

const dir = tempDir('livemig-proxy-');
let guest: TestGuest | undefined;
/** A slow link between the proxies keeps the migration going while a part is broken. */
const SLOW = ['--max-bandwidth', '4MiB'];

before(async () => {
  if (!QEMU_TOOLS.every(haveTool)) return;
  guest = await bootTestGuest(dir.path, { nbdArgs: ['--content-index', dir.path, '--content-index-listen', `unix:${join(dir.path, 'cindex.sock')}`] });
});
after(async () => {
  await guest?.stop();
  dir.cleanup();
});

test('the destination proxy killed mid-stream: the source proxy says the link is lost, the source QEMU runs on', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const dest = await startDestination(guest!, dir.path, 'killed-proxy');
  const source = await startSource(guest!, dir.path, dest.proxy, SLOW);
  try {
    await startMigration(guest!.qemu.qmp, source.address);
    await transferred(guest!.qemu, 16 << 20);
    dest.proxy.child.kill('SIGKILL');
    await failsWith(source, 'MIGRATE_LINK_LOST');
    await sourceFailedAndRuns(guest!.qemu);
  } finally {
    await stopAll(source, dest.proxy, dest.qemu);
  }
});

test('the destination QEMU killed mid-stream: both proxies name it, the source QEMU runs on', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const dest = await startDestination(guest!, dir.path, 'killed-qemu');
  const source = await startSource(guest!, dir.path, dest.proxy, SLOW);
  try {
    await startMigration(guest!.qemu.qmp, source.address);
    await transferred(guest!.qemu, 16 << 20);
    await dest.qemu.kill();
    assert.match(await failsWith(dest.proxy, 'QEMU_PROXY_QEMU_CLOSED'), /destination QEMU/);
    assert.match(await failsWith(source, 'QEMU_PROXY_QEMU_CLOSED'), /^livemig: destination proxy: /);
    await sourceFailedAndRuns(guest!.qemu);
  } finally {
    await stopAll(source, dest.proxy, dest.qemu);
  }
});

test('the storage server stopped mid-stream: the destination cannot read references, the source QEMU runs on', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const storage = await startNbdServe(['--read-only', '--export', `disk=${guest!.image.disk}`]); // how the destination host reaches the disk
  const dest = await startDestination(guest!, dir.path, 'storage-gone', { disk: storage.uri('disk') });
  const source = await startSource(guest!, dir.path, dest.proxy, SLOW);
  try {
    await startMigration(guest!.qemu.qmp, source.address);
    await transferred(guest!.qemu, 16 << 20);
    await storage.stop();
    assert.match(await failsWith(dest.proxy, 'MIGRATE_STORAGE'), /cannot read the guest's disk/);
    await failsWith(source, 'MIGRATE_STORAGE');
    await sourceFailedAndRuns(guest!.qemu);
  } finally {
    await stopAll(source, dest.proxy, dest.qemu);
    await storage.stop();
  }
});

test('storage unreachable at the handshake: the destination refuses, the source QEMU runs on', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const dest = await startDestination(guest!, dir.path, 'no-storage', { disk: 'nbd://127.0.0.1:1/disk' });
  const source = await startSource(guest!, dir.path, dest.proxy);
  try {
    await startMigration(guest!.qemu.qmp, source.address);
    assert.match(await failsWith(dest.proxy, 'MIGRATE_STORAGE'), /cannot open the guest's disk nbd:\/\/127\.0\.0\.1:1\/disk/);
    await failsWith(source, 'MIGRATE_STORAGE');
    await sourceFailedAndRuns(guest!.qemu);
  } finally {
    await stopAll(source, dest.proxy, dest.qemu);
  }
});

test('bytes that are no QEMU stream: the source proxy refuses them in one line', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const source = await startProxy(['--from', `unix:${join(dir.path, 'garbage.sock')}`, '--to', 'tcp://127.0.0.1:9', '--disk', guest!.nbd.uri('disk')]);
  try {
    const s = net.connect(join(dir.path, 'garbage.sock'));
    await once(s, 'connect');
    s.end('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(await failsWith(source, 'QEMU_STREAM_NOT_QEMU'), /not a QEMU migration stream: it starts with 47455420/);
    s.destroy();
  } finally {
    await stopAll(source);
  }
});

test('a capability the proxies cannot carry (compress): refused by name, the source QEMU runs on', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const dest = await startDestination(guest!, dir.path, 'compress');
  const source = await startSource(guest!, dir.path, dest.proxy);
  try {
    await setCapabilities(guest!.qemu.qmp, { compress: true });
    await startMigration(guest!.qemu.qmp, source.address);
    assert.match(await failsWith(source, 'QEMU_STREAM_UNSUPPORTED'), /compressed page .*turn the compress capability off/);
    await failsWith(dest.proxy, 'QEMU_STREAM_UNSUPPORTED');
    await sourceFailedAndRuns(guest!.qemu);
  } finally {
    await setCapabilities(guest!.qemu.qmp, { compress: false });
    await stopAll(source, dest.proxy, dest.qemu);
  }
});

// Last: it kills the guest every other case used.
test('the source QEMU killed mid-stream: a truncated stream, and the destination proxy hears why', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const dest = await startDestination(guest!, dir.path, 'victim');
  const source = await startSource(guest!, dir.path, dest.proxy, SLOW);
  try {
    await startMigration(guest!.qemu.qmp, source.address);
    await transferred(guest!.qemu, 16 << 20);
    await guest!.qemu.kill();
    assert.match(await failsWith(source, 'QEMU_STREAM_TRUNCATED'), /source QEMU closed its migration stream before its end/);
    await failsWith(dest.proxy, 'QEMU_STREAM_TRUNCATED');
    const exited = await Promise.race([dest.qemu.exited, new Promise<null>((r) => setTimeout(() => r(null), 30_000))]);
    assert.notEqual(exited, null, 'the destination QEMU abandoned the incoming migration');
  } finally {
    await stopAll(source, dest.proxy, dest.qemu);
  }
});
