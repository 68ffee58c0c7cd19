/**
 * A real QEMU guest migrated through the two stream proxies (`livemig qemu-proxy`,
 * separate processes), its disk and content index served by `livemig nbd serve`:
 * the memory arrives byte for byte (pmemsave of the source in postmigrate and the
 * destination under -S), references were used, and the guest answers after `cont`.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pmemsave, startMigration, waitForMigration, waitForRunState } from '../../src/qemu/migration-control.ts';
import type { SourceProxyResult, DestinationProxyResult } from '../../src/proxy/index.ts';
import { tempDir } from '../helpers/processes.ts';
import { haveTool, requireTools } from '../helpers/tools.ts';
import { bootTestGuest, QEMU_TOOLS, TEST_MEMORY, type TestGuest } from '../helpers/qemu-guest.ts';
import { startDestination, startSource, stopAll } from '../helpers/qemu-proxy.ts';

const dir = tempDir('livemig-proxy-');
let guest: TestGuest | undefined;

before(async () => {
  if (!QEMU_TOOLS.every(haveTool)) return;
  guest = await bootTestGuest(dir.path, { nbdArgs: ['--content-index', dir.path, '--content-index-listen', `unix:${join(dir.path, 'cindex.sock')}`] });
});
after(async () => {
  await guest?.stop();
  dir.cleanup();
});

test('a warm guest migrates through the proxies: identical memory, pages as references, alive after cont', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const source = guest!.qemu;
  const dest = await startDestination(guest!, dir.path, 'dest');
  const proxy = await startSource(guest!, dir.path, dest.proxy);
  try {
    await startMigration(source.qmp, proxy.address);
    const info = await waitForMigration(source.qmp, 180_000);
    assert.equal(info.status, 'completed', info['error-desc']);
    assert.deepEqual(await Promise.all([proxy.exited, dest.proxy.exited]), [0, 0], `${proxy.stderr()}\n${dest.proxy.stderr()}`);
    const sent = JSON.parse(proxy.stdout()) as SourceProxyResult;
    const fed = JSON.parse(dest.proxy.stdout()) as DestinationProxyResult;
    assert.ok(sent.pages.ref > 0, 'pages travelled as references');
    assert.equal(fed.refPages, sent.pages.ref);
    assert.equal(fed.streamBytes, sent.streamBytes);
    assert.equal(sent.refRetried, 0);
    assert.ok(sent.linkBytes < sent.streamBytes * 0.8, `the link carried ${sent.linkBytes} bytes of a ${sent.streamBytes}-byte stream`);
    assert.equal(fed.fetchedBytes >= sent.pages.ref * 4096, true);

    await waitForRunState(source.qmp, 'postmigrate', 10_000);
    await waitForRunState(dest.qemu.qmp, 'paused', 60_000);
    const [a, b] = [join(dir.path, 'source.mem'), join(dir.path, 'dest.mem')];
    await pmemsave(source.qmp, TEST_MEMORY, a);
    await pmemsave(dest.qemu.qmp, TEST_MEMORY, b);
    assert.ok(readFileSync(a).equals(readFileSync(b)), 'source and destination memory differ');
    await dest.qemu.qmp.execute('cont');
    await dest.qemu.serial.askAlive(30_000);
  } finally {
    await stopAll(proxy, dest.proxy, dest.qemu);
    if ((await source.qmp.execute<{ status: string }>('query-status')).status === 'postmigrate') await source.qmp.execute('cont');
  }
});
