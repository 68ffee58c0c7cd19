/**
 * Three hosts on one machine for migration benchmarks: the source, the destination
 * and the storage server each in a network namespace, joined by veth pairs whose
 * egress is shaped by `tc qdisc … tbf` (both directions). The migration link joins
 * source and destination; each agent has its own storage link. Needs root and
 * iproute2; `netnsAvailable()` says why not.
 *
 *   lmb-src 10.77.1.1 ──migration── 10.77.1.2 lmb-dst
 *   lmb-src 10.77.2.1 ──storage──── 10.77.2.2 lmb-sto
 *   lmb-dst 10.77.3.1 ──storage──── 10.77.3.2 lmb-sto
 */
import { execFileSync } from 'node:child_process';
import type { Placement, Role } from '../../src/demo/hosts.ts';

/** Namespace names; another prefix lets two benchmarks run side by side. */
const namespaces = (prefix: string): Record<Role, string> => ({ source: `${prefix}-src`, destination: `${prefix}-dst`, storage: `${prefix}-sto` });
const links = (NS: Record<Role, string>) => [
  { name: 'mig', a: NS.source, b: NS.destination, net: 1, kind: 'migration' },
  { name: 'ss', a: NS.source, b: NS.storage, net: 2, kind: 'storage' },
  { name: 'ds', a: NS.destination, b: NS.storage, net: 3, kind: 'storage' },
] as const;

const run = (...args: string[]) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });

/** Null if namespaces can be made here, else the reason. */
export function netnsAvailable(): string | null {
  if (process.getuid?.() !== 0) return 'kernel link shaping needs root (network namespaces, tc)';
  try {
    run('ip', '-V');
    run('tc', '-V');
  } catch {
    return 'kernel link shaping needs iproute2 (ip, tc)';
  }
  return null;
}

/** tbf on a device: `rate` bytes/s, a burst of at least one timer tick's worth. */
function shape(ns: string, dev: string, rate: number): void {
  const burst = Math.max(64 * 1024, Math.ceil(rate / 250));
  run('ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${Math.round(rate * 8)}bit`, 'burst', String(burst), 'latency', '50ms');
}

export interface Topology {
  placement: Placement;
  /** Changes the shaping of the links in place. */
  shape: (rates: { migration: number; storage?: number }) => void;
  destroy: () => void;
  namespaces: Record<Role, string>;
}

/** Creates (or recreates) the three namespaces and links; rates in bytes/s, storage unshaped if absent. */
export function createTopology(rates: { migration: number; storage?: number }, prefix = 'lmb'): Topology {
  destroyTopology(prefix);
  const NS = namespaces(prefix);
  const LINKS = links(NS);
  for (const ns of Object.values(NS)) {
    run('ip', 'netns', 'add', ns);
    run('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  }
  for (const l of LINKS) {
    const [da, db] = [`${l.name}-a`, `${l.name}-b`];
    run('ip', 'link', 'add', da, 'netns', l.a, 'type', 'veth', 'peer', 'name', db, 'netns', l.b);
    run('ip', 'netns', 'exec', l.a, 'ip', 'addr', 'add', `10.77.${l.net}.1/30`, 'dev', da);
    run('ip', 'netns', 'exec', l.b, 'ip', 'addr', 'add', `10.77.${l.net}.2/30`, 'dev', db);
    run('ip', 'netns', 'exec', l.a, 'ip', 'link', 'set', da, 'up');
    run('ip', 'netns', 'exec', l.b, 'ip', 'link', 'set', db, 'up');
  }
  const reshape = (r: { migration: number; storage?: number }) => {
    for (const l of LINKS) {
      const rate = l.kind === 'migration' ? r.migration : r.storage;
      for (const [ns, dev] of [[l.a, `${l.name}-a`], [l.b, `${l.name}-b`]]) {
        if (rate) shape(ns, dev, rate);
        else run('ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'replace', 'dev', dev, 'root', 'pfifo_fast');
      }
    }
  };
  reshape(rates);
  return {
    placement: {
      wrap: (role) => ['ip', 'netns', 'exec', NS[role]],
      listen: { storage: '0.0.0.0', destination: '10.77.1.2' },
      storageFrom: { source: '10.77.2.2', destination: '10.77.3.2' },
    },
    shape: reshape,
    destroy: () => destroyTopology(prefix),
    namespaces: NS,
  };
}

/** Removes the namespaces (their veths go with them); quiet if they do not exist. */
export function destroyTopology(prefix = 'lmb'): void {
  for (const ns of Object.values(namespaces(prefix))) {
    try {
      run('ip', 'netns', 'del', ns);
    } catch {
      // not there
    }
  }
}
