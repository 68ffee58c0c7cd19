/** Spawning peers (nbdkit, qemu-nbd, our CLI) for tests, with cleanup and readiness checks. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

export const REPO = new URL('../..', import.meta.url).pathname;
export const LIVEMIG = join(REPO, 'bin/livemig.js');

export function tempDir(prefix = 'livemig-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion and collects its output. */
export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000); // a bound on hangs, generous for a loaded machine
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

export const livemig = (args: string[], opts?: { timeoutMs?: number }) => run(process.execPath, [LIVEMIG, ...args], opts);

/** Polls a condition every 50 ms until it holds; fails after timeoutMs (a bound on hangs, not a speed check) naming what it waited for. */
export async function waitFor(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

export interface Peer {
  uri: (exportName?: string) => string;
  process: ChildProcess;
  stop: () => Promise<void>;
}

/** Starts a server that listens on a Unix socket we choose, and waits until it accepts. */
async function startOnSocket(cmd: string, args: string[], socket: string, exportName: string): Promise<Peer> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  let exited = false;
  child.on('exit', () => (exited = true));
  try {
    await waitFor(async () => {
      if (exited) throw new Error(`${cmd} exited: ${stderr.trim()}`);
      return existsSync(socket) && (await canConnect(socket));
    }, `${cmd} on ${socket}`);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    uri: (name = exportName) => `nbd+unix:///${encodeURIComponent(name)}?socket=${encodeURIComponent(socket)}`,
    process: child,
    stop: async () => {
      if (exited) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

/** nbdkit in the foreground on a Unix socket: `plugin` and its args, e.g. ('memory', ['size=64M']). */
export function startNbdkit(dir: string, plugin: string, pluginArgs: string[], extra: string[] = []): Promise<Peer> {
  const socket = join(dir, `nbdkit-${Math.random().toString(36).slice(2)}.sock`);
  return startOnSocket('nbdkit', ['--foreground', '--exit-with-parent', '--unix', socket, ...extra, plugin, ...pluginArgs], socket, '');
}

/** qemu-nbd serving a raw image on a Unix socket (default export ""). */
export function startQemuNbd(dir: string, image: string, extra: string[] = []): Promise<Peer> {
  const socket = join(dir, `qemu-nbd-${Math.random().toString(36).slice(2)}.sock`);
  return startOnSocket('qemu-nbd', ['--format=raw', '--persistent', '--shared=16', `--socket=${socket}`, ...extra, image], socket, '');
}
