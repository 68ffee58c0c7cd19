/**
 * Stock QEMU across three "hosts" (network namespaces from netns.ts, or all on
 * loopback when `topology` is null): the storage host runs `livemig nbd serve
 * --content-index` for the guest's disk, the source host the guest's QEMU and the
 * source proxy, the destination host the incoming QEMU and the destination proxy.
 * Every process is spawned as a user runs it, under `ip netns exec` when placed.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import type { Role } from '../../src/demo/hosts.ts';
import type { Topology } from './netns.ts';

const LIVEMIG = new URL('../../bin/livemig.js', import.meta.url).pathname;

/** Every livemig process started here, killed when the benchmark exits (interrupted too). */
const children = new Set<ChildProcess>();
process.once('exit', () => children.forEach((c) => c.kill('SIGKILL')));
function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export interface Hosts {
  /** Command prefix that runs a process on `role`'s host. */
  wrap: (role: Role) => string[];
  /** Address the destination proxy and the destination QEMU listen on, as the source reaches it. */
  destinationAddress: string;
  /** The storage host's address as `role` reaches it. */
  storageFrom: (role: 'source' | 'destination') => string;
  /** Bytes both ways on the migration link so far (the veth's counters), or null on loopback. */
  linkBytes: () => number | null;
  /** How to start a livemig process: node, with --cpu-prof when profiling. */
  node: string[];
}

export function placeHosts(topology: Topology | null, profileDir?: string): Hosts {
  const node = [process.execPath, ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [])];
  if (!topology) return { wrap: () => [], destinationAddress: '127.0.0.1', storageFrom: () => '127.0.0.1', linkBytes: () => null, node };
  const p = topology.placement;
  const stat = (name: string) => Number(execFileSync('ip', ['netns', 'exec', topology.namespaces.source, 'cat', `/sys/class/net/mig-a/statistics/${name}`], { encoding: 'utf8' }));
  return {
    wrap: (role) => p.wrap(role),
    destinationAddress: p.listen.destination,
    storageFrom: (role) => p.storageFrom[role],
    linkBytes: () => stat('tx_bytes') + stat('rx_bytes'),
    node,
  };
}

export interface Storage {
  /** nbd:// URI of the disk export as `role` reaches it. */
  diskUri: (role: 'source' | 'destination') => string;
  /** The content index's lookup address as the source proxy reaches it. */
  indexAddress: string;
  process: ChildProcess;
  stop: () => Promise<void>;
}

/** `livemig nbd serve --read-only --content-index DIR` on the storage host, listening on every address. */
export async function startStorage(hosts: Hosts, disk: string, indexDir: string): Promise<Storage> {
  const listen = hosts.wrap('storage').length ? '0.0.0.0' : '127.0.0.1';
  const args = [LIVEMIG, 'nbd', 'serve', '--read-only', '--export', `disk=${disk}`, '--listen', `tcp://${listen}:0`,
    '--content-index', indexDir, '--content-index-listen', `tcp://${listen}:0`, '--json'];
  const [cmd, ...rest] = [...hosts.wrap('storage'), ...hosts.node, ...args];
  const child = track(spawn(cmd, rest, { stdio: ['ignore', 'pipe', 'inherit'] }));
  const [line] = (await Promise.race([once(createInterface({ input: child.stdout! }), 'line'), once(child, 'exit').then(([c]) => { throw new Error(`nbd serve exited ${c}`); })])) as [string];
  const info = JSON.parse(line) as { listening: string; contentIndexListening: string };
  const port = (address: string) => new URL(address.replace(/^tcp:/, 'http:')).port;
  const [nbdPort, indexPort] = [port(info.listening), port(info.contentIndexListening)];
  return {
    diskUri: (role) => `nbd://${hosts.storageFrom(role)}:${nbdPort}/disk`,
    indexAddress: `tcp://${hosts.storageFrom('source')}:${indexPort}`,
    process: child,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

export interface ProxyProcess {
  address: string;
  child: ChildProcess;
  /** The --json result once it exited 0; rejects with its stderr otherwise. */
  result: Promise<Record<string, unknown>>;
  kill: () => Promise<void>;
}

/** Starts `livemig qemu-proxy ARGS --json` on `role`'s host and waits for its "waiting for … on ADDRESS" line. */
export async function startProxy(hosts: Hosts, role: Role, args: string[]): Promise<ProxyProcess> {
  const [cmd, ...rest] = [...hosts.wrap(role), ...hosts.node, LIVEMIG, 'qemu-proxy', ...args, '--json'];
  const child = track(spawn(cmd, rest, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let [out, err] = ['', ''];
  child.stdout!.on('data', (d) => (out += d));
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const lines = createInterface({ input: child.stderr! });
  const first = await Promise.race([once(lines, 'line').then(([l]) => l as string), exited.then((code) => `exited ${code}`)]);
  lines.on('line', (l) => (err += `${l}\n`));
  const m = / on (\S+)$/.exec(first);
  if (!m) throw new Error(`qemu-proxy (${role}) did not start: ${first} ${err}`);
  const result = exited.then((code) => {
    if (code !== 0) throw new Error(`qemu-proxy (${role}) exited ${code}: ${err.trim()}`);
    return JSON.parse(out) as Record<string, unknown>;
  });
  result.catch(() => {}); // awaited by the caller; a failure before that is not unhandled
  const kill = async () => void (child.exitCode === null && child.signalCode === null && (child.kill('SIGKILL'), await exited));
  return { address: m[1], child, result, kill };
}

/** A fresh Unix socket path in `dir` for one migration. */
export const socketPath = (dir: string, name: string) => join(dir, `${name}-${Math.random().toString(36).slice(2, 8)}.sock`);
