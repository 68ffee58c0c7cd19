/**
 * The hosts of a migration on one machine: each role (storage server, source,
 * destination) is a livemig process, run as a Placement says: plain processes on
 * loopback, or inside network namespaces. Every process started is tracked, so
 * a run (or an interrupted benchmark) leaves none behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

const LIVEMIG = new URL('../../bin/livemig.js', import.meta.url).pathname;

export type Role = 'storage' | 'source' | 'destination';

export interface Placement {
  /** The command prefix that runs a process as that host, e.g. ['ip', 'netns', 'exec', 'lmb-src']. */
  wrap: (role: Role) => string[];
  /** The address each server listens on. */
  listen: { storage: string; destination: string };
  /** The storage server's address as the source and the destination reach it. */
  storageFrom: { source: string; destination: string };
}

export const LOOPBACK: Placement = {
  wrap: () => [],
  listen: { storage: '127.0.0.1', destination: '127.0.0.1' },
  storageFrom: { source: '127.0.0.1', destination: '127.0.0.1' },
};

export interface HostProcess {
  child: ChildProcess;
  /** The JSON line a livemig process prints once it is ready ({} for other programs). */
  info: Record<string, unknown>;
  stderr: () => string;
}

/** Every process any Hosts has started and not yet reaped, for killAll on an interrupt. */
const live = new Set<ChildProcess>();

/** Kills whatever local runs have running (a benchmark interrupted by a signal). */
export function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
}

export class Hosts {
  private readonly children: ChildProcess[] = [];

  /** `logLevel` other than silent is passed to each livemig process, whose stderr is then echoed here. */
  constructor(readonly placement: Placement = LOOPBACK, private readonly logLevel = 'silent', private readonly profileDir?: string) {}

  /** Runs a command as `role`; its stderr is kept for lastWords. */
  spawn(role: Role, command: string[], stdout: 'pipe' | 'ignore' = 'ignore'): HostProcess {
    const full = [...this.placement.wrap(role), ...command];
    const child = spawn(full[0], full.slice(1), { stdio: ['ignore', stdout, 'pipe'] });
    this.children.push(child);
    live.add(child);
    child.once('exit', () => live.delete(child));
    let stderr = '';
    child.stderr!.on('data', (d) => {
      stderr += d;
      if (this.logLevel !== 'silent') process.stderr.write(d);
    });
    return { child, info: {}, stderr: () => stderr };
  }

  /** Starts `livemig ARGS --json` as `role`; resolves once it printed its ready line. */
  async livemig(role: Role, args: string[]): Promise<HostProcess> {
    const profile = this.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${this.profileDir}`] : [];
    const p = this.spawn(role, [process.execPath, ...profile, LIVEMIG, ...args, '--json', '--log-level', this.logLevel], 'pipe');
    const line = await new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: p.child.stdout! });
      lines.on('error', () => {});
      lines.once('line', resolve);
      p.child.once('exit', (code) => reject(new Error(`livemig ${args[0]} exited with ${code}: ${p.stderr().trim()}`)));
    });
    return { ...p, info: JSON.parse(line) };
  }

  /** What a process that died said last, for the error of the run it broke ('' while it runs). */
  static lastWords(name: string, p: HostProcess): string {
    if (p.child.exitCode === null && p.child.signalCode === null) return '';
    const said = p.stderr().trim().split('\n').slice(-3).join(' | ');
    return `; the ${name} exited (${p.child.exitCode ?? p.child.signalCode})${said ? `: ${said.slice(-600)}` : ''}`;
  }

  /** Stops every process of this run (SIGTERM) and waits for them. */
  async stopAll(): Promise<void> {
    for (const c of this.children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(this.children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : null)));
  }
}
