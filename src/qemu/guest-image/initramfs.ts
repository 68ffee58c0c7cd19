/**
 * The guest's whole userland: a gzipped cpio with busybox-static, the virtio modules
 * and an /init that mounts /dev/vda read-only, reads every file once (a warm page
 * cache, the thing livemig turns into block references), then keeps a shell on the
 * serial console that runs each line it gets. `livemig.loop=1` on the kernel command line adds a background loop
 * that re-reads the files in random order forever.
 */
import { promises as fsp } from 'node:fs';
import { basename } from 'node:path';
import { gzipSync } from 'node:zlib';
import { cpioNewc, type CpioEntry } from './cpio.ts';
import { GuestImageError } from './errors.ts';
import type { KernelFiles } from './kernel.ts';

export const BUSYBOX_PATHS = ['/bin/busybox', '/usr/bin/busybox'];
/** Printed on the console once every file has been read. */
export const READY_LINE = 'livemig-guest: ready';

const INIT = `#!/bin/busybox sh
# livemig test guest: mount the disk read-only, read every file once, answer on ttyS0.
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
fail() { echo "livemig-guest: $*"; poweroff -f; }
for m in $(cat /etc/modules); do insmod /lib/modules/$m || fail "insmod $m failed"; done
n=0
while [ ! -b /dev/vda ]; do
  n=$((n + 1)); [ $n -gt 300 ] && fail "no /dev/vda after 30 s"
  sleep 0.1
done
mount -t ext4 -o ro /dev/vda /mnt || fail "cannot mount /dev/vda"
find /mnt -type f > /tmp/files
tr '\\n' '\\0' < /tmp/files | xargs -0 cat > /dev/null
echo "${READY_LINE}, read $(wc -l < /tmp/files) files"
case " $(cat /proc/cmdline) " in
  *" livemig.loop=1 "*)
    (while :; do shuf /tmp/files | tr '\\n' '\\0' | xargs -0 cat > /dev/null; done) &
    echo "livemig-guest: file-reading loop started" ;;
esac
while :; do setsid cttyhack sh; done
`;

/** The initramfs bytes (deterministic for the same busybox and modules). */
export async function buildInitramfs(kernel: KernelFiles): Promise<Buffer> {
  const busybox = await readStaticBusybox();
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'etc', 'lib', 'lib/modules', 'mnt', 'proc', 'sys', 'tmp'].map((path) => ({ path, type: 'dir' as const })),
    { path: 'dev/console', type: 'char', major: 5, minor: 1 }, // the kernel opens it for init before devtmpfs is mounted
    { path: 'bin/busybox', type: 'file', data: busybox, mode: 0o755 },
    { path: 'bin/sh', type: 'symlink', target: 'busybox' },
    { path: 'init', type: 'file', data: Buffer.from(INIT), mode: 0o755 },
    { path: 'etc/modules', type: 'file', data: Buffer.from(kernel.modules.map((m) => basename(m)).join('\n') + '\n') },
  ];
  for (const m of kernel.modules) entries.push({ path: `lib/modules/${basename(m)}`, type: 'file', data: await fsp.readFile(m) });
  return gzipSync(cpioNewc(entries), { level: 6 });
}

async function readStaticBusybox(): Promise<Buffer> {
  for (const path of BUSYBOX_PATHS) {
    const bin = await fsp.readFile(path).catch(() => null);
    if (bin && !hasInterpreter(bin)) return bin;
  }
  throw new GuestImageError('GUEST_IMAGE_TOOL', `no statically linked busybox at ${BUSYBOX_PATHS.join(' or ')}: apt-get install busybox-static`);
}

/** A dynamically linked ELF names its loader in a PT_INTERP program header; a static one has none. */
export function hasInterpreter(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return true; // not a 64-bit ELF: not usable
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const size = elf.readUInt16LE(0x36);
  const count = elf.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) {
    const at = phoff + i * size;
    if (at + 4 > elf.length) return true;
    if (elf.readUInt32LE(at) === 3) return true; // PT_INTERP
  }
  return false;
}
