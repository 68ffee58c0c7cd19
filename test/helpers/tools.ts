/**
 * External peers the interop tests need. Without CI set, a missing tool skips
 * the test with a one-line hint; with CI set it fails, because .ci/run installs them.
 */
import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

export const PACKAGE_OF: Record<string, string> = {
  nbdkit: 'nbdkit',
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  'qemu-nbd': 'qemu-utils',
  'qemu-system-x86_64': 'qemu-system-x86',
  busybox: 'busybox-static',
  mke2fs: 'e2fsprogs',
  cpio: 'cpio',
  openssl: 'openssl',
};

const found = new Map<string, boolean>();
export function haveTool(tool: string): boolean {
  if (!found.has(tool)) found.set(tool, spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0);
  return found.get(tool)!;
}

/** Returns true when the tools are there; otherwise skips (locally) or throws (CI). */
export function requireTools(t: TestContext, ...tools: string[]): boolean {
  const missing = tools.filter((tool) => !haveTool(tool));
  if (missing.length === 0) return true;
  const packages = [...new Set(missing.map((m) => PACKAGE_OF[m] ?? m))].join(' ');
  const hint = `needs ${missing.join(', ')}: apt-get install ${packages}`;
  if (process.env.CI) throw new Error(`${hint} (CI is set, so this fails instead of skipping)`);
  t.skip(hint);
  return false;
}
