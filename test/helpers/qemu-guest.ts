/**
 * A real QEMU test guest: the cached guest image, its disk served read-only by
 * `livemig nbd serve`, QEMU booted until the guest has read its files. And a recorder
 * that plays the migration destination on a Unix socket, handing each connection
 * QEMU opens to the test.
 */
import net from 'node:net';
import { join } from 'node:path';
import { buildGuestImage, kernelCommandLine, READY_LINE, type GuestImage } from '../../src/qemu/guest-image/index.ts';
import { launchQemu, type QemuProcess } from '../../src/qemu/launch.ts';
import { setCapabilities, setParameters, startMigration, waitForMigration, type MigrationInfo } from '../../src/qemu/migration-control.ts';
import { startNbdServe, type ServeProcess } from './nbd-serve.ts';

/** What booting a test guest needs (apt-get and dpkg-deb fetch the kernel; Debian has them). */
export const QEMU_TOOLS = ['qemu-system-x86_64', 'busybox', 'mke2fs', 'apt-get', 'dpkg-deb'];

export const TEST_MEMORY = 256 << 20;
export const TEST_DISK = 96 << 20;
/** Boot plus reading ~80 MiB of files under TCG on a busy 2-core machine. */
const BOOT_TIMEOUT_MS = 180_000;

export interface TestGuest {
  image: GuestImage;
  nbd: ServeProcess;
  qemu: QemuProcess;
  stop: () => Promise<void>;
}

export async function bootTestGuest(dir: string, opts: { loop?: boolean; name?: string; nbdArgs?: string[] } = {}): Promise<TestGuest> {
  const image = await buildGuestImage({ diskBytes: TEST_DISK });
  const nbd = await startNbdServe(['--read-only', '--export', `disk=${image.disk}`, ...(opts.nbdArgs ?? [])]);
  let qemu: QemuProcess;
  try {
    qemu = await launchQemu({
      dir, name: opts.name ?? 'guest', memoryBytes: TEST_MEMORY, kernel: image.kernel, initrd: image.initrd,
      append: kernelCommandLine({ loop: opts.loop }), disk: { uri: nbd.uri('disk'), readOnly: true },
    });
    await qemu.serial.waitFor(READY_LINE, BOOT_TIMEOUT_MS, 0);
  } catch (err) {
    await nbd.stop();
    throw err;
  }
  return { image, nbd, qemu, stop: async () => (await qemu.kill(), await nbd.stop()) };
}

export interface Recording {
  info: MigrationInfo;
  connections: number;
}

/**
 * Migrates `qemu` to a Unix socket in `dir` with the given capabilities and parameters
 * (both put back afterwards, unless keepSettings); `onConnection` gets every connection QEMU opens, in order.
 * Resolves once the migration completed, failed or was cancelled.
 */
export async function recordMigration(
  qemu: QemuProcess, dir: string,
  opts: { capabilities?: Record<string, boolean>; parameters?: Record<string, unknown>; reset?: Record<string, unknown>; keepSettings?: boolean; timeoutMs?: number },
  onConnection: (socket: net.Socket, index: number) => void,
): Promise<Recording> {
  const path = join(dir, `mig-${Math.random().toString(36).slice(2, 8)}.sock`);
  let connections = 0;
  const server = net.createServer((s) => onConnection(s, connections++));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const caps = opts.capabilities ?? {};
  try {
    await setCapabilities(qemu.qmp, caps);
    await setParameters(qemu.qmp, opts.parameters ?? {});
    await startMigration(qemu.qmp, `unix:${path}`);
    const info = await waitForMigration(qemu.qmp, opts.timeoutMs ?? 120_000);
    return { info, connections };
  } finally {
    server.close();
    if (!opts.keepSettings) {
      await setCapabilities(qemu.qmp, Object.fromEntries(Object.keys(caps).map((k) => [k, false])));
      await setParameters(qemu.qmp, opts.reset ?? {});
    }
  }
}
