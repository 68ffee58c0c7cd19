/** A disk served by `livemig nbd serve` in one process, so that it grants leases (docs/nbd.md), with a pristine copy kept aside. */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { startNbdServe } from './nbd-serve.ts';
import type { OwnDisk } from './nothing-lost.ts';

export async function leasedDisk(dir: string, base: string, name: string): Promise<OwnDisk> {
  const image = join(dir, `${name}.img`);
  const pristine = join(dir, `${name}.pristine.img`);
  copyFileSync(base, image);
  copyFileSync(base, pristine);
  const server = await startNbdServe(['--workers', '1', '--export', `disk=${image}`]);
  return { image, pristine, server, uri: server.uri('disk') };
}
