/**
 * A warm QEMU guest for benchmarks, and a direct QEMU to QEMU migration of it over TCP
 * on loopback, verified as the issue asks (pmemsave of source and paused destination
 * byte-identical, the guest alive after `cont`). The disk is served by `livemig nbd
 * serve` in its own process, as a user would run it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { buildGuestImage, kernelCommandLine, READY_LINE, type GuestImage } from '../../src/qemu/guest-image/index.ts';
import { launchQemu, type QemuProcess } from '../../src/qemu/launch.ts';
import { pmemsave, setParameters, startMigration, waitForMigration, waitForRunState } from '../../src/qemu/migration-control.ts';

const LIVEMIG = new URL('../../bin/livemig.js', import.meta.url).pathname;

export interface WarmGuest {
  image: GuestImage;
  memoryBytes: number;
  nbd: ChildProcess;
  nbdUri: string;
  qemu: QemuProcess;
  loop: boolean;
  bootMs: number;
  stop: () => Promise<void>;
}

export async function bootWarmGuest(dir: string, o: { memoryBytes: number; diskBytes: number; loop?: boolean }): Promise<WarmGuest> {
  const image = await buildGuestImage({ diskBytes: o.diskBytes });
  const nbd = spawn(process.execPath, [LIVEMIG, 'nbd', 'serve', '--read-only', '--export', `disk=${image.disk}`, '--listen', 'tcp://127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(createInterface({ input: nbd.stdout! }), 'line')) as [string];
  const nbdUri = (JSON.parse(line) as { exports: { uri: string }[] }).exports[0].uri;
  const t0 = performance.now();
  const qemu = await launchQemu({
    dir, name: 'source', memoryBytes: o.memoryBytes, kernel: image.kernel, initrd: image.initrd,
    append: kernelCommandLine({ loop: o.loop }), disk: { uri: nbdUri, readOnly: true },
  });
  await qemu.serial.waitFor(READY_LINE, 15 * 60_000, 0);
  const bootMs = performance.now() - t0;
  const stop = async () => {
    await qemu.kill();
    nbd.kill('SIGTERM');
    await once(nbd, 'exit');
  };
  return { image, memoryBytes: o.memoryBytes, nbd, nbdUri, qemu, loop: !!o.loop, bootMs, stop };
}

export interface DirectResult {
  maxBandwidth: number; // bytes/s given to QEMU (0: unthrottled)
  wallMs: number; // migrate command to completed, as seen here
  totalMs: number; // QEMU's total-time
  downtimeMs: number; // QEMU's downtime
  ramTransferred: number; // QEMU's ram.transferred
  normalPages: number;
  zeroPages: number;
  dirtySyncCount: number;
  identical: boolean; // pmemsave of source (postmigrate) and destination (-S) byte-identical
  alive: boolean; // the destination's guest answered on its serial console after cont
}

/** QEMU's max-bandwidth when "unthrottled": far above what loopback and two cores reach. */
const UNTHROTTLED = 100e9;

/** Migrates the guest to a fresh destination and back to the source afterwards (the source resumes; the destination is dropped). */
export async function directMigration(g: WarmGuest, dir: string, maxBandwidth: number): Promise<DirectResult> {
  const dest = await launchQemu({
    dir, name: 'dest', memoryBytes: g.memoryBytes, kernel: g.image.kernel, initrd: g.image.initrd,
    append: kernelCommandLine({ loop: g.loop }), disk: { uri: g.nbdUri, readOnly: true }, incoming: 'defer', paused: true,
  });
  try {
    await dest.qmp.execute('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
    const port = await incomingPort(dest);
    await setParameters(g.qemu.qmp, { 'max-bandwidth': maxBandwidth || UNTHROTTLED, 'downtime-limit': 300 });
    const t0 = performance.now();
    await startMigration(g.qemu.qmp, `tcp:127.0.0.1:${port}`);
    const info = await waitForMigration(g.qemu.qmp, 15 * 60_000, 10);
    const wallMs = performance.now() - t0;
    if (info.status !== 'completed') throw new Error(`direct migration ${info.status}: ${info['error-desc'] ?? ''}`);
    await waitForRunState(dest.qmp, 'paused', 60_000);
    const identical = await sameMemory(g.qemu, dest, g.memoryBytes, dir);
    await dest.qmp.execute('cont');
    const alive = await dest.serial.askAlive(60_000).then(() => true, () => false);
    return {
      maxBandwidth, wallMs, totalMs: info['total-time'] ?? NaN, downtimeMs: info.downtime ?? NaN, ramTransferred: info.ram!.transferred,
      normalPages: info.ram!.normal, zeroPages: info.ram!.duplicate, dirtySyncCount: info.ram!['dirty-sync-count'], identical, alive,
    };
  } finally {
    await dest.kill();
    if ((await g.qemu.qmp.execute<{ status: string }>('query-status')).status === 'postmigrate') await g.qemu.qmp.execute('cont');
  }
}

async function incomingPort(dest: QemuProcess): Promise<number> {
  const info = await dest.qmp.execute<{ 'socket-address'?: { port?: string }[] }>('query-migrate');
  const port = Number(info['socket-address']?.[0]?.port);
  if (!port) throw new Error(`the destination reports no listening port: ${JSON.stringify(info)}`);
  return port;
}

/** pmemsave on both sides, compared 16 MiB at a time. */
export async function sameMemory(source: QemuProcess, dest: QemuProcess, memoryBytes: number, dir: string): Promise<boolean> {
  const [a, b] = [join(dir, 'source.mem'), join(dir, 'dest.mem')];
  await pmemsave(source.qmp, memoryBytes, a);
  await pmemsave(dest.qmp, memoryBytes, b);
  const [fa, fb] = await Promise.all([fsp.open(a), fsp.open(b)]);
  try {
    const [ba, bb] = [Buffer.alloc(16 << 20), Buffer.alloc(16 << 20)];
    for (let pos = 0; pos < memoryBytes; pos += ba.length) {
      const [ra, rb] = await Promise.all([fa.read(ba, 0, ba.length, pos), fb.read(bb, 0, bb.length, pos)]);
      if (ra.bytesRead !== rb.bytesRead || !ba.subarray(0, ra.bytesRead).equals(bb.subarray(0, rb.bytesRead))) return false;
    }
    return true;
  } finally {
    await Promise.all([fa.close(), fb.close(), fsp.rm(a, { force: true }), fsp.rm(b, { force: true })]);
  }
}
