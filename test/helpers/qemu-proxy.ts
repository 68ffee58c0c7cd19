/**
 * The QEMU stream proxies as a user runs them (`livemig qemu-proxy`, one process each),
 * a destination QEMU waiting with -incoming under -S, and the checks every failure test
 * makes: the proxy that saw it exits 1 with one line naming the code, and the source
 * QEMU failed its migration and runs its guest on.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { kernelCommandLine } from '../../src/qemu/guest-image/index.ts';
import { launchQemu, type QemuProcess } from '../../src/qemu/launch.ts';
import { waitForMigration, waitForRunState, type MigrationInfo } from '../../src/qemu/migration-control.ts';
import { LIVEMIG } from './processes.ts';
import { TEST_MEMORY, type TestGuest } from './qemu-guest.ts';

export interface ProxyProcess {
  /** Where it waits: unix:PATH for QEMU, or tcp://HOST:PORT for the source proxy. */
  address: string;
  child: ChildProcess;
  exited: Promise<number | null>;
  stdout: () => string;
  stderr: () => string;
}

/** Starts `livemig qemu-proxy ARGS --json` and waits for its "waiting for … on ADDRESS" line. */
export async function startProxy(args: string[]): Promise<ProxyProcess> {
  const child = spawn(process.execPath, [LIVEMIG, 'qemu-proxy', ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const lines = createInterface({ input: child.stderr! });
  const first = await Promise.race([once(lines, 'line').then(([l]) => l as string), exited.then((code) => `exited ${code}`)]);
  lines.on('line', (l) => (err += `${l}\n`));
  const m = / on (\S+)$/.exec(first);
  if (!m) throw new Error(`qemu-proxy did not start: ${first} ${err}`);
  return { address: m[1], child, exited, stdout: () => out, stderr: () => `${first}\n${err}` };
}

/** The destination: a QEMU waiting on unix:DIR/NAME.sock, paused (-S), and its proxy feeding it. */
export async function startDestination(guest: TestGuest, dir: string, name: string, opts: { disk?: string; memoryBytes?: number; extra?: string[] } = {}): Promise<{ qemu: QemuProcess; proxy: ProxyProcess }> {
  const incoming = join(dir, `${name}.sock`);
  const qemu = await launchQemu({
    dir, name, memoryBytes: opts.memoryBytes ?? TEST_MEMORY, kernel: guest.image.kernel, initrd: guest.image.initrd,
    append: kernelCommandLine(), disk: { uri: guest.nbd.uri('disk'), readOnly: true }, incoming: `unix:${incoming}`, paused: true,
  });
  try {
    const proxy = await startProxy(['--listen', 'tcp://127.0.0.1:0', '--to', `unix:${incoming}`, '--disk', opts.disk ?? guest.nbd.uri('disk'), ...(opts.extra ?? [])]);
    return { qemu, proxy };
  } catch (err) {
    await qemu.kill();
    throw err;
  }
}

export function startSource(guest: TestGuest, dir: string, to: ProxyProcess, extra: string[] = []): Promise<ProxyProcess> {
  return startProxy(['--from', `unix:${join(dir, `src-${Math.random().toString(36).slice(2, 8)}.sock`)}`, '--to', to.address, '--disk', guest.nbd.uri('disk'), '--index', `unix:${join(dir, 'cindex.sock')}`, ...extra]);
}

/** The proxy exited 1 with one line on stderr (after its "waiting" line) naming `code`, and no stack. */
export async function failsWith(p: ProxyProcess, code: string, timeoutMs = 60_000): Promise<string> {
  const exit = await Promise.race([p.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), timeoutMs).unref())]);
  assert.equal(exit, 1, `the proxy should exit 1; stderr: ${p.stderr()}`);
  const lines = p.stderr().trim().split('\n').filter((l) => !l.startsWith('livemig qemu-proxy: waiting'));
  assert.equal(lines.length, 1, `one line on stderr, not: ${p.stderr()}`);
  assert.match(lines[0], new RegExp(`^livemig: .+ \\[${code}\\]$`));
  return lines[0];
}

/** The source QEMU failed its migration (bounded wait) and its guest runs on and answers. */
export async function sourceFailedAndRuns(qemu: QemuProcess): Promise<MigrationInfo> {
  const info = await waitForMigration(qemu.qmp, 60_000);
  assert.equal(info.status, 'failed');
  await waitForRunState(qemu.qmp, 'running', 10_000);
  await qemu.serial.askAlive(30_000);
  return info;
}

/** Resolves once the source QEMU has put `bytes` of its stream into the source proxy (bounded). */
export async function transferred(qemu: QemuProcess, bytes: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = await qemu.qmp.execute<MigrationInfo>('query-migrate');
    if ((info.ram?.transferred ?? 0) >= bytes) return;
    if (info.status !== 'active' && info.status !== 'setup') throw new Error(`migration ${info.status} before ${bytes} bytes went out`);
    if (Date.now() > deadline) throw new Error(`fewer than ${bytes} bytes of stream within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function stopAll(...ps: (ProxyProcess | QemuProcess | undefined)[]): Promise<unknown> {
  return Promise.all(ps.map((p) => (p && 'child' in p ? (p.child.kill('SIGKILL'), p.exited) : p?.kill())));
}
