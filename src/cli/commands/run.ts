/** `livemig run`: starts an emulated guest with a control socket, in the foreground. */
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Guest } from '../../guest/guest.ts';
import { serveControl } from '../../guest/control/server.ts';
import { WORKLOADS } from '../../guest/workloads/registry.ts';
import { parse, sizeOption } from '../parse.ts';
import { UsageError } from '../usage-error.ts';
import { formatBytes } from '../../util/size.ts';

export const help = `Usage: livemig run --name NAME --memory SIZE --disk NBD-URI|PATH
                   --workload PROFILE --control SOCKET [--state-dir DIR]
                   [--seed N] [--dirty-rate SIZE/s] [--write-rate SIZE/s] [--json]

Start an emulated guest: memory in shared buffers, a workload in a worker
thread, its disk behind the I/O interceptor that keeps the p2b map (SQLite in
the state dir). Runs until 'livemig stop', SIGINT or SIGTERM.

  --memory SIZE        guest memory, e.g. 1GiB (regions of at most 1 GiB)
  --disk URI|PATH      nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=S, or a file
  --workload PROFILE   ${Object.entries(WORKLOADS).map(([n, w]) => `${n} (${w.summary})`).join('\n                       ')}
  --control SOCKET     Unix socket for status|pause|resume|stop|throttle|dump-memory
  --state-dir DIR      where p2b.sqlite lives (default: $TMPDIR/livemig-NAME)
  --seed N             workload seed (default 1): same seed, same operations
  --dirty-rate RATE    for 'dirty', e.g. 64MiB (per second; default 32MiB)
  --write-rate RATE    for 'diskwrite' (per second; default 8MiB)
  --json               print {name, control, p2b, ...} as one line once running`;

export async function run(args: string[]): Promise<number> {
  const { values } = parse(args, {
    name: { type: 'string' },
    memory: { type: 'string' },
    disk: { type: 'string' },
    workload: { type: 'string' },
    control: { type: 'string' },
    'state-dir': { type: 'string' },
    seed: { type: 'string' },
    'dirty-rate': { type: 'string' },
    'write-rate': { type: 'string' },
  });
  if (values.help) return void console.log(help), 0;
  for (const required of ['name', 'memory', 'disk', 'workload', 'control'] as const) {
    if (!values[required]) throw new UsageError(`run needs --${required}`);
  }
  if (!WORKLOADS[values.workload!]) throw new UsageError(`unknown workload ${JSON.stringify(values.workload)} (have: ${Object.keys(WORKLOADS).join(', ')})`);
  const memoryBytes = sizeOption('--memory', values.memory!);
  if (memoryBytes % 4096) throw new UsageError('--memory must be a multiple of 4 KiB');
  const seed = values.seed === undefined ? 1 : Number(values.seed);
  if (!Number.isInteger(seed)) throw new UsageError('--seed must be an integer');
  const strip = (v: string) => v.replace(/\/s$/, '');
  const options = {
    seed,
    ...(values['dirty-rate'] ? { dirtyRate: sizeOption('--dirty-rate', strip(values['dirty-rate'])) } : {}),
    ...(values['write-rate'] ? { writeRate: sizeOption('--write-rate', strip(values['write-rate'])) } : {}),
  };
  const name = values.name!;
  const stateDir = resolve(values['state-dir'] ?? join(tmpdir(), `livemig-${name}`));
  const control = resolve(values.control!);

  const guest = await Guest.start({ name, memoryBytes, disk: values.disk!, workload: values.workload!, options, stateDir });
  let stopping: Promise<void> | null = null;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const stop = () => (stopping ??= guest.stop().finally(done));
  const server = await serveControl(control, guest, { onStop: () => void stop() });
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());

  const s = await guest.status();
  if (values.json) console.log(JSON.stringify({ name, control, memoryBytes, workload: values.workload, disk: s.disk.description, p2b: s.p2b.path }));
  else console.log(`${name} running: ${formatBytes(memoryBytes)}, workload ${values.workload}, disk ${s.disk.description}\n  control ${control}\n  p2b map ${s.p2b.path}`);

  await finished;
  server.close();
  return 0;
}
