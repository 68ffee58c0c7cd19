/** nbdkit's file plugin as the storage host of a local run, optionally behind its rate filter (bytes/s). */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Hosts } from '../../src/demo/hosts.ts';
import type { StorageServer } from '../../src/demo/local-migration.ts';

export function nbdkitStorage(rate?: number): (hosts: Hosts, image: string, dir: string) => Promise<StorageServer> {
  return async (hosts, image, dir) => {
    const at = hosts.placement;
    // nbdkit writes its pid file once it listens: that is the readiness signal.
    const port = 20000 + Math.floor(Math.random() * 40000);
    const pidFile = join(dir, 'nbdkit.pid');
    const filter = rate ? ['--filter=rate'] : [];
    const p = hosts.spawn('storage', ['nbdkit', '--foreground', '--exit-with-parent', '-P', pidFile, '-i', at.listen.storage, '-p', String(port),
      '-e', 'disk', ...filter, 'file', image, ...(rate ? [`rate=${Math.round(rate * 8)}`] : [])]);
    for (let i = 0; !existsSync(pidFile); i++) {
      if (p.child.exitCode !== null || i > 200) throw new Error(`nbdkit did not start: ${p.stderr().trim() || `exit ${p.child.exitCode}`}`);
      await delay(25);
    }
    return { pid: p.child.pid!, uri: (role) => `nbd://${at.storageFrom[role]}:${port}/disk` };
  };
}
