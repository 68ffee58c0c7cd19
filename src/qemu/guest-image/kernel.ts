/**
 * The guest's kernel: Debian's linux-image-cloud-amd64 fetched with `apt-get download`
 * (the meta package and the versioned image it depends on) and unpacked with
 * `dpkg-deb -x`, nothing installed. The cloud kernel builds ext4 and the 8250 serial
 * console in, but virtio-pci and virtio-blk are modules: we keep those .ko files and
 * the order to load them in (dependencies first, read from each module's modinfo).
 */
import { promises as fsp, existsSync } from 'node:fs';
import { join } from 'node:path';
import { runTool } from './exec.ts';
import { GuestImageError } from './errors.ts';

export const KERNEL_PACKAGE = 'linux-image-cloud-amd64';
/** What the guest needs to reach its disk; their dependencies are added. */
const WANTED_MODULES = ['virtio_pci', 'virtio_blk'];

export interface KernelFiles {
  release: string; // e.g. 6.1.0-56-cloud-amd64
  vmlinuz: string;
  /** Absolute paths of the .ko files, in load order. */
  modules: string[];
}

/** The kernel files in `dir`, downloaded the first time (the caller holds the cache lock). */
export async function fetchKernel(dir: string): Promise<KernelFiles> {
  const manifest = join(dir, 'kernel.json');
  const cached = await readManifest(manifest);
  if (cached) return cached;
  const work = await fsp.mkdtemp(join(dir, 'kernel-build-'));
  try {
    const versioned = await downloadImagePackage(work);
    const root = join(work, 'root');
    await runTool('dpkg-deb', ['-x', join(work, versioned), root], { code: 'GUEST_IMAGE_KERNEL' });
    const release = (await fsp.readdir(join(root, 'lib/modules')))[0];
    if (!release) throw new GuestImageError('GUEST_IMAGE_KERNEL', `${versioned} holds no lib/modules/RELEASE`);
    const out = join(dir, `kernel-${release}`);
    await fsp.mkdir(out, { recursive: true });
    const vmlinuz = join(out, 'vmlinuz');
    await fsp.copyFile(join(root, 'boot', `vmlinuz-${release}`), vmlinuz);
    const modules: string[] = [];
    for (const ko of await moduleLoadOrder(join(root, 'lib/modules', release), WANTED_MODULES)) {
      const to = join(out, ko.split('/').pop()!);
      await fsp.copyFile(ko, to);
      modules.push(to);
    }
    const files: KernelFiles = { release, vmlinuz, modules };
    await fsp.writeFile(`${manifest}.tmp`, JSON.stringify(files, null, 1));
    await fsp.rename(`${manifest}.tmp`, manifest); // the manifest appears last: its presence means "complete"
    return files;
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

async function readManifest(path: string): Promise<KernelFiles | null> {
  if (!existsSync(path)) return null;
  const files = JSON.parse(await fsp.readFile(path, 'utf8')) as KernelFiles;
  return [files.vmlinuz, ...files.modules].every((f) => existsSync(f)) ? files : null;
}

/** Downloads the meta package, reads which versioned image it depends on, downloads that; returns its .deb name. */
async function downloadImagePackage(work: string): Promise<string> {
  const hint = `(is apt's package list current? run apt-get update)`;
  await runTool('apt-get', ['download', KERNEL_PACKAGE], { cwd: work, code: 'GUEST_IMAGE_KERNEL' }).catch((e: Error) => {
    throw new GuestImageError('GUEST_IMAGE_KERNEL', `${e.message} ${hint}`);
  });
  const meta = (await fsp.readdir(work)).find((f) => f.startsWith(`${KERNEL_PACKAGE}_`));
  if (!meta) throw new GuestImageError('GUEST_IMAGE_KERNEL', `apt-get download ${KERNEL_PACKAGE} left no .deb`);
  const depends = await runTool('dpkg-deb', ['-f', join(work, meta), 'Depends'], { code: 'GUEST_IMAGE_KERNEL' });
  const image = /linux-image-[0-9][^\s,(]*/.exec(depends)?.[0];
  if (!image) throw new GuestImageError('GUEST_IMAGE_KERNEL', `${meta} depends on no versioned linux-image: ${depends.trim()}`);
  await runTool('apt-get', ['download', image], { cwd: work, code: 'GUEST_IMAGE_KERNEL' });
  const deb = (await fsp.readdir(work)).find((f) => f.startsWith(`${image}_`));
  if (!deb) throw new GuestImageError('GUEST_IMAGE_KERNEL', `apt-get download ${image} left no .deb`);
  return deb;
}

/** The .ko paths for `wanted` and everything they depend on, each after its dependencies. */
export async function moduleLoadOrder(modulesDir: string, wanted: string[]): Promise<string[]> {
  const byName = new Map<string, string>();
  for (const rel of await fsp.readdir(modulesDir, { recursive: true })) {
    const m = /([^/]+)\.ko$/.exec(rel);
    if (m) byName.set(m[1].replace(/-/g, '_'), join(modulesDir, rel));
  }
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = async (name: string): Promise<void> => {
    const path = byName.get(name);
    if (!path) throw new GuestImageError('GUEST_IMAGE_KERNEL', `kernel module ${name} is not in the package (built in? then drop it)`);
    if (order.includes(path) || visiting.has(name)) return;
    visiting.add(name);
    for (const dep of modinfoDepends(await fsp.readFile(path))) await visit(dep);
    order.push(path);
  };
  for (const name of wanted) await visit(name);
  return order;
}

/** The `depends=` entry of a module's .modinfo section (NUL-separated key=value strings). */
export function modinfoDepends(ko: Buffer): string[] {
  const at = ko.indexOf('\0depends=');
  if (at < 0) return [];
  const start = at + '\0depends='.length;
  const value = ko.subarray(start, ko.indexOf(0, start)).toString('latin1');
  return value ? value.split(',').map((d) => d.replace(/-/g, '_')) : [];
}
