/**
 * Starts qemu-system-x86_64 under TCG for a direct-kernel guest whose disk is an NBD
 * export, with QMP and the serial console on Unix sockets in `dir`. `incoming` makes
 * it a migration destination, `paused` adds -S. QEMU dies with its owner: it runs
 * under `setpriv --pdeathsig KILL` (the owner killed hard) and is killed on the
 * owner's exit (the owner ending normally).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { LivemigError } from '../errors.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import net from 'node:net';
import { QmpClient } from './qmp.ts';
import { SerialConsole } from './serial-console.ts';

export const QEMU_BINARY = 'qemu-system-x86_64';

export class QemuLaunchError extends LivemigError {
  constructor(message: string) {
    super('QEMU_LAUNCH', message);
    this.name = 'QemuLaunchError';
  }
}

export interface QemuOptions {
  /** Directory for the QMP and serial sockets (short: Unix socket paths are limited to 107 bytes). */
  dir: string;
  name?: string;
  memoryBytes: number;
  kernel: string;
  initrd: string;
  append: string;
  /** The disk, attached as virtio-blk: nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH. */
  disk: { uri: string; readOnly?: boolean };
  /** Migration destination: `-incoming URI` (tcp:HOST:PORT, unix:PATH, defer, …). */
  incoming?: string;
  /** Start with the CPUs stopped (-S). */
  paused?: boolean;
  /** TCG's threading: QEMU's default is one thread per vCPU (multi) on x86 hosts. */
  tcgThread?: 'single' | 'multi';
  extraArgs?: string[];
  /** A command QEMU runs under, e.g. ['ip', 'netns', 'exec', NS] to place it in a network namespace. */
  wrap?: string[];
  /** Milliseconds to wait for QMP (TCG start-up is slow on a busy machine). */
  startTimeoutMs?: number;
}

export function qemuArgs(o: QemuOptions, qmpPath: string, serialPath: string): string[] {
  const drive = `file=${o.disk.uri},format=raw,if=virtio,cache=none${o.disk.readOnly ? ',readonly=on' : ''}`;
  return [
    '-name', o.name ?? 'livemig-guest', '-machine', 'pc', '-accel', o.tcgThread ? `tcg,thread=${o.tcgThread}` : 'tcg', '-m', `${Math.floor(o.memoryBytes / (1 << 20))}M`, '-smp', '1',
    '-display', 'none', '-nodefaults', '-no-user-config', '-no-reboot',
    '-kernel', o.kernel, '-initrd', o.initrd, '-append', o.append,
    '-drive', drive,
    '-chardev', `socket,id=qmp,path=${qmpPath},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control',
    '-chardev', `socket,id=serial0,path=${serialPath},server=on,wait=off`, '-serial', 'chardev:serial0',
    ...(o.paused ? ['-S'] : []),
    ...(o.incoming ? ['-incoming', o.incoming] : []),
    ...(o.extraArgs ?? []),
  ];
}

const live = new Set<ChildProcess>();
let exitHook = false;

export class QemuProcess {
  private stderrTail = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly process: ChildProcess, readonly qmpPath: string, readonly serialPath: string) {
    process.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderrTail = (this.stderrTail + d).slice(-8000)));
    this.exited = once(process, 'exit').then(([code, signal]) => ({ code, signal }));
  }

  qmp!: QmpClient;
  serial!: SerialConsole;

  get pid(): number {
    return this.process.pid!;
  }

  get stderr(): string {
    return this.stderrTail;
  }

  get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  /** Asks QEMU to quit; kills it if it has not exited within `timeoutMs`. */
  async quit(timeoutMs = 5000): Promise<void> {
    if (!this.running) return this.closeSockets();
    await this.qmp?.execute('quit').catch(() => {});
    const timer = setTimeout(() => this.process.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
    this.closeSockets();
  }

  async kill(): Promise<void> {
    if (this.running) this.process.kill('SIGKILL');
    await this.exited;
    this.closeSockets();
  }

  private closeSockets(): void {
    this.qmp?.close();
    this.serial?.close();
  }
}

let setprivWorks: boolean | undefined;
function deathSignalWrapper(): string[] {
  setprivWorks ??= spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true']).status === 0;
  return setprivWorks ? ['setpriv', '--pdeathsig', 'KILL', '--'] : [];
}

export async function launchQemu(o: QemuOptions): Promise<QemuProcess> {
  const qmpPath = join(o.dir, `${o.name ?? 'qemu'}.qmp`);
  const serialPath = join(o.dir, `${o.name ?? 'qemu'}.serial`);
  const command = [...(o.wrap ?? []), ...deathSignalWrapper(), QEMU_BINARY, ...qemuArgs(o, qmpPath, serialPath)];
  const child = spawn(command[0], command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  track(child);
  const qemu = new QemuProcess(child, qmpPath, serialPath);
  const spawnError = once(child, 'error').then(([e]) => e as NodeJS.ErrnoException);
  try {
    const deadline = Date.now() + (o.startTimeoutMs ?? 30_000);
    await waitForSockets(qemu, [qmpPath, serialPath], deadline, spawnError);
    qemu.serial = await SerialConsole.connect(serialPath);
    qemu.qmp = await QmpClient.connect(qmpPath, Math.max(1000, deadline - Date.now()));
    return qemu;
  } catch (err) {
    await qemu.kill();
    throw err;
  }
}

async function waitForSockets(qemu: QemuProcess, paths: string[], deadline: number, spawnError: Promise<NodeJS.ErrnoException>): Promise<void> {
  let failed: NodeJS.ErrnoException | null = null;
  void spawnError.then((e) => (failed = e));
  for (;;) {
    if (failed) throw new QemuLaunchError(`cannot start ${QEMU_BINARY}: ${(failed as NodeJS.ErrnoException).code ?? ''} (apt-get install qemu-system-x86)`);
    if (!qemu.running) throw new QemuLaunchError(`${QEMU_BINARY} exited at start: ${qemu.stderr.trim().split('\n').pop() ?? ''}`);
    if (paths.every((p) => existsSync(p)) && (await Promise.all(paths.map(canConnect))).every(Boolean)) return;
    if (Date.now() > deadline) throw new QemuLaunchError(`${QEMU_BINARY} did not open its sockets in time`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

/** Kills every QEMU still running when the owner exits (pdeathsig covers the owner being killed). */
function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}
