/**
 * The real QEMU test guest and the pieces that run it: the cached image, the launcher
 * (QMP, serial console, -incoming, -S, dying with its owner), and a direct QEMU to
 * QEMU migration checked the way the issue asks: pmemsave of the source (postmigrate)
 * and the paused destination byte-identical, the guest alive after `cont`.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildGuestImage, kernelCommandLine } from '../../src/qemu/guest-image/index.ts';
import { launchQemu, type QemuProcess } from '../../src/qemu/launch.ts';
import { QmpError } from '../../src/qemu/qmp.ts';
import { pmemsave, startMigration, waitForMigration, waitForRunState } from '../../src/qemu/migration-control.ts';
import { run, tempDir } from '../helpers/processes.ts';
import { haveTool, requireTools } from '../helpers/tools.ts';
import { bootTestGuest, QEMU_TOOLS, TEST_DISK, TEST_MEMORY, type TestGuest } from '../helpers/qemu-guest.ts';

const dir = tempDir('livemig-qemu-');
let guest: TestGuest | undefined;

before(async () => {
  if (QEMU_TOOLS.every(haveTool)) guest = await bootTestGuest(dir.path);
});
after(async () => {
  await guest?.stop();
  dir.cleanup();
});

test('the guest image is built once: a second build reuses every file', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const first = guest!.image;
  const mtimes = [first.kernel, first.initrd, first.disk].map((f) => statSync(f).mtimeMs);
  const again = await buildGuestImage({ diskBytes: TEST_DISK });
  assert.deepEqual([again.kernel, again.initrd, again.disk], [first.kernel, first.initrd, first.disk]);
  assert.deepEqual([again.kernel, again.initrd, again.disk].map((f) => statSync(f).mtimeMs), mtimes);
  assert.equal(statSync(first.disk).size, TEST_DISK);
  assert.ok(first.dataBytes > TEST_DISK * 0.5, `${first.dataBytes} bytes of files`);
});

test('the initramfs is a cpio archive that cpio(1) lists: init, static busybox, /dev/console, the virtio modules', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS, 'cpio')) return;
  const listing = await run('sh', ['-c', `gzip -dc < '${guest!.image.initrd}' | cpio -it --quiet`]);
  assert.equal(listing.code, 0, listing.stderr);
  const names = listing.stdout.split('\n');
  for (const name of ['init', 'bin/busybox', 'dev/console', 'lib/modules/virtio_blk.ko', 'lib/modules/virtio_pci.ko', 'etc/modules']) assert.ok(names.includes(name), `${name} missing`);
});

test('the guest mounted its disk, read every file, and answers on the serial console', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const { qemu, image } = guest!;
  const ready = await qemu.serial.waitFor(/livemig-guest: ready, read (\d+) files/, 1000, 0);
  assert.equal(Number(ready[1]), image.files);
  await qemu.serial.askAlive(10_000);
  await qemu.serial.ask('grep -c " /mnt ext4 ro," /proc/mounts', /\r?\n1\r?\n/, 10_000);
});

test('QMP: results, typed errors, and events that may already have arrived', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const { qmp } = guest!.qemu;
  assert.equal(qmp.version.qemu.major >= 7, true);
  assert.deepEqual(await qmp.execute('query-status'), { status: 'running', singlestep: false, running: true });
  await assert.rejects(qmp.execute('no-such-command'), (e: QmpError) => e instanceof QmpError && e.code === 'QMP_COMMAND' && e.errorClass === 'CommandNotFound');
  const since = qmp.eventCount;
  await qmp.execute('stop');
  await waitForRunState(qmp, 'paused', 5000);
  assert.equal((await qmp.waitEvent('STOP', { since, timeoutMs: 5000 })).event, 'STOP'); // it came before we waited
  await qmp.execute('cont');
  await qmp.waitEvent('RESUME', { since, timeoutMs: 5000 });
  await assert.rejects(qmp.waitEvent('SHUTDOWN', { timeoutMs: 50 }), { code: 'QMP_TIMEOUT' });
});

async function ownerRun(mode: 'wait' | 'exit'): Promise<{ owner: ReturnType<typeof spawn>; qemuPid: number }> {
  const { image, nbd } = guest!;
  const owner = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures/qemu-owner.ts')], {
    env: { ...process.env, DIR: dir.path, KERNEL: image.kernel, INITRD: image.initrd, DISK: nbd.uri('disk'), OWNER_MODE: mode },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = (await once(createInterface({ input: owner.stdout! }), 'line')) as [string];
  return { owner, qemuPid: Number(line) };
}

async function gone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('QEMU dies with its owner, whether the owner is killed or exits', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const killed = await ownerRun('wait');
  assert.ok(!(await gone(killed.qemuPid, 0)), 'QEMU runs while its owner does');
  killed.owner.kill('SIGKILL');
  assert.ok(await gone(killed.qemuPid, 10_000), 'QEMU outlived its SIGKILLed owner');
  const exited = await ownerRun('exit');
  assert.ok(await gone(exited.qemuPid, 10_000), 'QEMU outlived its owner\'s exit');
});

test('direct QEMU to QEMU migration: -incoming destination under -S has the same memory, and the guest runs on after cont', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const { qemu: source, image, nbd } = guest!;
  const socket = join(dir.path, 'incoming.sock');
  let dest: QemuProcess | undefined;
  try {
    dest = await launchQemu({
      dir: dir.path, name: 'dest', memoryBytes: TEST_MEMORY, kernel: image.kernel, initrd: image.initrd, append: kernelCommandLine(),
      disk: { uri: nbd.uri('disk'), readOnly: true }, incoming: `unix:${socket}`, paused: true,
    });
    await waitForRunState(dest.qmp, 'inmigrate', 5000);
    await startMigration(source.qmp, `unix:${socket}`);
    const info = await waitForMigration(source.qmp, 120_000);
    assert.equal(info.status, 'completed', info['error-desc']);
    await waitForRunState(source.qmp, 'postmigrate', 5000);
    await waitForRunState(dest.qmp, 'paused', 30_000);
    const [src, dst] = [join(dir.path, 'src.mem'), join(dir.path, 'dst.mem')];
    await pmemsave(source.qmp, TEST_MEMORY, src);
    await pmemsave(dest.qmp, TEST_MEMORY, dst);
    assert.ok(readFileSync(src).equals(readFileSync(dst)), 'source and destination memory differ');
    await dest.qmp.execute('cont');
    await dest.serial.askAlive(30_000);
  } finally {
    await dest?.kill();
    if ((await source.qmp.execute<{ status: string }>('query-status')).status === 'postmigrate') await source.qmp.execute('cont');
  }
});
