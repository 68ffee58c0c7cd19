/** `livemig guest-image`: build (or find in the cache) the real Linux test guest for QEMU. */
import { buildGuestImage, defaultGuestCache, kernelCommandLine } from '../../qemu/guest-image/index.ts';
import { parse, sizeOption } from '../parse.ts';
import { formatBytes } from '../../util/size.ts';

export const help = `Usage: livemig guest-image [--disk 96MiB] [--dir DIR] [--json]

Builds a Linux guest for QEMU from this machine, or finds it already built:
Debian's cloud kernel (apt-get download, nothing installed), a busybox
initramfs, and an ext4 image of real files from /usr filling about 85 % of
--disk. The guest mounts its disk read-only, reads every file once, and keeps
a shell on its serial console; livemig.loop=1 on the kernel command line adds
a loop that re-reads the files forever.

  --disk SIZE   size of the ext4 image (default 96MiB; 4 KiB multiple)
  --dir DIR     cache directory (default $LIVEMIG_GUEST_CACHE, else
                $XDG_CACHE_HOME/livemig/qemu-guest, else ~/.cache/livemig/qemu-guest)
  --json        print the paths and sizes as one JSON object`;

export async function run(args: string[]): Promise<number> {
  const { values } = parse(args, { disk: { type: 'string' }, dir: { type: 'string' } });
  if (values.help) return void console.log(help), 0;
  const diskBytes = values.disk ? sizeOption('--disk', values.disk) : 96 << 20;
  const image = await buildGuestImage({ diskBytes, dir: values.dir ?? defaultGuestCache(), log: values.json ? undefined : (l) => console.error(l) });
  if (values.json) console.log(JSON.stringify({ ...image, append: kernelCommandLine() }));
  else {
    console.log(`kernel  ${image.kernel} (${image.kernelRelease})\ninitrd  ${image.initrd}\ndisk    ${image.disk} (${formatBytes(image.diskBytes)}, ${image.files} files, ${formatBytes(image.dataBytes)})`);
    console.log(`append  ${kernelCommandLine()}`);
  }
  return 0;
}
