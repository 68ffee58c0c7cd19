/**
 * One verified migration of a warm stock QEMU guest, direct (QEMU to QEMU over TCP)
 * or through the two `livemig qemu-proxy` processes, with the figures the qemu
 * benchmark compares. Times come from QMP event timestamps (one host clock): from
 * the source's MIGRATION setup to the destination QEMU's MIGRATION completed, and
 * from the source's STOP to that same completion (the pause as the destination sees
 * it; QEMU's own `downtime` ends when the source has written its last byte, which a
 * proxy absorbs). Every run: pmemsave of source and paused destination identical, and
 * the destination's guest answers on its serial console after `cont`.
 */
import { kernelCommandLine, type GuestImage } from '../../src/qemu/guest-image/index.ts';
import { launchQemu, type QemuProcess } from '../../src/qemu/launch.ts';
import type { QmpEvent } from '../../src/qemu/qmp.ts';
import { setCapabilities, startMigration, waitForMigration, waitForRunState, type MigrationInfo } from '../../src/qemu/migration-control.ts';
import { sameMemory } from './qemu-guest.ts';
import { processUsage } from './process-usage.ts';
import { socketPath, startProxy, type Hosts, type ProxyProcess, type Storage } from './qemu-hosts.ts';

export interface Guest {
  image: GuestImage;
  memoryBytes: number;
  qemu: QemuProcess;
  storage: Storage;
  hosts: Hosts;
  dir: string;
}

export interface RunFigures {
  /** Bytes both ways on the migration link (veth counters; on loopback the payload: QEMU's or the proxies'). */
  linkBytes: number;
  /** Source's MIGRATION setup to the destination QEMU's MIGRATION completed. */
  totalMs: number;
  /** QEMU's query-migrate downtime and total-time, as the source reports them. */
  downtimeMs: number;
  qemuTotalMs: number;
  /** Source's STOP to the destination QEMU's MIGRATION completed. */
  pauseMs: number;
  /** QEMU's ram.transferred: bytes of RAM stream the source QEMU wrote. */
  ramTransferred: number;
  /** CPU time over the migration (setup to the destination's completion) of each process here. */
  cpuMs: Record<string, number>;
  identical: boolean;
  alive: boolean;
}

export interface ProxyFigures extends RunFigures {
  refPages: number;
  fullPages: number;
  zeroPages: number;
  refRetried: number;
  streamBytes: number;
  proxyLinkBytes: number;
  source: Record<string, unknown>;
  destination: Record<string, unknown>;
}

const MIGRATION_TIMEOUT_MS = 15 * 60_000;
const ms = (e: QmpEvent) => e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
const status = (s: string) => (e: QmpEvent) => e.data.status === s;

async function launchDestination(g: Guest, name: string): Promise<QemuProcess> {
  const dest = await launchQemu({
    dir: g.dir, name, memoryBytes: g.memoryBytes, kernel: g.image.kernel, initrd: g.image.initrd, append: kernelCommandLine(),
    disk: { uri: g.storage.diskUri('destination'), readOnly: true }, incoming: 'defer', paused: true, wrap: g.hosts.wrap('destination'),
  });
  await setCapabilities(dest.qmp, { events: true });
  return dest;
}

/** Starts the migration to `uri` and waits for the destination to have loaded all of it; the timeline from QMP events. */
/** CPU ms of each process so far. */
const cpuOf = (pids: Record<string, number>) => Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processUsage(pid)?.cpuMs ?? NaN]));

/** QEMU 7.2 reads `completed` a moment before it has filled in total-time and downtime. */
async function finalInfo(g: Guest, info: MigrationInfo): Promise<MigrationInfo> {
  for (let i = 0; i < 100 && !info['total-time']; i++) {
    await new Promise((r) => setTimeout(r, 10));
    info = await g.qemu.qmp.execute<MigrationInfo>('query-migrate');
  }
  return info;
}

async function migrate(g: Guest, dest: QemuProcess, uri: string): Promise<{ info: MigrationInfo; totalMs: number; pauseMs: number; linkBytes: number | null; cpuMs: Record<string, number> }> {
  const [since, destSince] = [g.qemu.qmp.eventCount, dest.qmp.eventCount];
  const pids = { sourceQemu: g.qemu.pid, destinationQemu: dest.pid, storage: g.storage.process.pid! };
  const [link0, cpu0] = [g.hosts.linkBytes(), cpuOf(pids)];
  await startMigration(g.qemu.qmp, uri);
  const info = await finalInfo(g, await waitForMigration(g.qemu.qmp, MIGRATION_TIMEOUT_MS, 10));
  if (info.status !== 'completed') throw new Error(`migration ${info.status}: ${info['error-desc'] ?? ''}`);
  const done = await dest.qmp.waitEvent('MIGRATION', { since: destSince, match: status('completed'), timeoutMs: 120_000 });
  const cpu1 = cpuOf(pids);
  const setup = await g.qemu.qmp.waitEvent('MIGRATION', { since, match: status('setup'), timeoutMs: 1000 });
  const stop = await g.qemu.qmp.waitEvent('STOP', { since, timeoutMs: 1000 });
  const link1 = g.hosts.linkBytes();
  const cpuMs = Object.fromEntries(Object.keys(pids).map((k) => [k, Math.round(cpu1[k] - cpu0[k])]));
  return { info, totalMs: ms(done) - ms(setup), pauseMs: ms(done) - ms(stop), linkBytes: link0 === null ? null : link1! - link0, cpuMs };
}

/** Memory compared, then `cont` and a question on the serial console; the source resumes afterwards. */
async function verify(g: Guest, dest: QemuProcess): Promise<{ identical: boolean; alive: boolean }> {
  await waitForRunState(dest.qmp, 'paused', 60_000);
  const identical = await sameMemory(g.qemu, dest, g.memoryBytes, g.dir);
  await dest.qmp.execute('cont');
  const alive = await dest.serial.askAlive(60_000).then(() => true, () => false);
  return { identical, alive };
}

async function resumeSource(g: Guest): Promise<void> {
  if ((await g.qemu.qmp.execute<{ status: string }>('query-status')).status === 'postmigrate') await g.qemu.qmp.execute('cont');
}

function figures(m: Awaited<ReturnType<typeof migrate>>, v: { identical: boolean; alive: boolean }, payload: number): RunFigures {
  return {
    linkBytes: m.linkBytes ?? payload, totalMs: Math.round(m.totalMs), downtimeMs: m.info.downtime ?? NaN, qemuTotalMs: m.info['total-time'] ?? NaN,
    pauseMs: Math.round(m.pauseMs), ramTransferred: m.info.ram?.transferred ?? NaN, cpuMs: m.cpuMs, ...v,
  };
}

export async function directRun(g: Guest): Promise<RunFigures> {
  const dest = await launchDestination(g, 'direct');
  try {
    await dest.qmp.execute('migrate-incoming', { uri: `tcp:${g.hosts.destinationAddress}:0` });
    const info = await dest.qmp.execute<{ 'socket-address'?: { port?: string }[] }>('query-migrate');
    const port = Number(info['socket-address']?.[0]?.port);
    if (!port) throw new Error(`the destination reports no listening port: ${JSON.stringify(info)}`);
    const m = await migrate(g, dest, `tcp:${g.hosts.destinationAddress}:${port}`);
    return figures(m, await verify(g, dest), m.info.ram?.transferred ?? NaN);
  } finally {
    await dest.kill();
    await resumeSource(g);
  }
}

/** `proxyArgs`: more options for the source proxy (e.g. --keep 32MiB). */
export async function proxyRun(g: Guest, proxyArgs: string[] = []): Promise<ProxyFigures> {
  const dest = await launchDestination(g, 'viaproxy');
  const proxies: ProxyProcess[] = [];
  try {
    const incoming = socketPath(g.dir, 'dst');
    await dest.qmp.execute('migrate-incoming', { uri: `unix:${incoming}` });
    const dp = await startProxy(g.hosts, 'destination', ['--listen', `tcp://${g.hosts.destinationAddress}:0`, '--insecure', '--to', `unix:${incoming}`, '--disk', g.storage.diskUri('destination')]);
    proxies.push(dp);
    const from = socketPath(g.dir, 'src');
    const sp = await startProxy(g.hosts, 'source', ['--from', `unix:${from}`, '--to', dp.address, '--disk', g.storage.diskUri('source'), '--index', g.storage.indexAddress, ...proxyArgs]);
    proxies.push(sp);
    const m = await migrate(g, dest, `unix:${from}`).catch(async (err: Error) => {
      // QEMU's error says only that its socket broke: the proxies say why.
      const why = await Promise.all(proxies.map((p) => Promise.race([p.result.then(() => '', (e: Error) => e.message), new Promise<string>((r) => setTimeout(() => r(''), 5000))])));
      throw new Error([err.message, ...why.filter(Boolean)].join('; '));
    });
    const [sent, fed] = await Promise.all([sp.result, dp.result]);
    const pages = sent.pages as { ref: number; full: number; zero: number };
    const v = await verify(g, dest);
    const f = figures(m, v, sent.linkBytes as number);
    f.cpuMs = { ...f.cpuMs, sourceProxy: sent.cpuMs as number, destinationProxy: fed.cpuMs as number };
    return {
      ...f, refPages: pages.ref, fullPages: pages.full, zeroPages: pages.zero,
      refRetried: sent.refRetried as number, streamBytes: sent.streamBytes as number, proxyLinkBytes: sent.linkBytes as number, source: sent, destination: fed,
    };
  } finally {
    await Promise.all(proxies.map((p) => p.kill()));
    await dest.kill();
    await resumeSource(g);
  }
}
