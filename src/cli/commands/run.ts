/** `livemig run`: starts an emulated guest with a control socket, or waits for one (--incoming). */
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Guest } from '../../guest/guest.ts';
import { serveControl } from '../../guest/control/server.ts';
import { WORKLOADS } from '../../guest/workloads/registry.ts';
import { heapOptions } from '../page-options.ts';
import { listenIncoming } from '../../migrate/destination/index.ts';
import { prepareMigration } from '../../migrate/source/index.ts';
import { Agent } from '../agent.ts';
import { parse, sizeOption, asUsage, workloadOption } from '../parse.ts';
import { UsageError } from '../usage-error.ts';
import { formatBytes } from '../../util/size.ts';
import { loadLinkSecurity, parseLinkAddress } from '../../wire/index.ts';
import { createLogger } from '../../log/logger.ts';
import type { Logger } from 'pino';
import { logLevel } from '../parse.ts';

export const help = `Usage: livemig run --name NAME --memory SIZE --disk NBD-URI|PATH
                   --workload PROFILE --control SOCKET [--state-dir DIR]
                   [--seed N] [--dirty-rate SIZE/s] [--write-rate SIZE/s]
                   [--write-size BYTES] [--heap random|compressible] [--json]
       livemig run --incoming tcp://HOST:PORT|unix:PATH --control SOCKET --disk NBD-URI|PATH
                   [--tls-creds DIR | --tls-psk FILE | --insecure]
                   [--memory SIZE] [--paused] [--stay] [--state-dir DIR] [--json]

Start an emulated guest: memory in shared buffers, a workload in a worker
thread, its disk behind the I/O interceptor that keeps the p2b map (SQLite in
the state dir). Runs until 'livemig stop', SIGINT or SIGTERM, or until it has
migrated away ('livemig migrate').

With --incoming it is a destination: it waits for a guest to arrive on that
address, then runs it with the same control commands. Memory size, workload and
seed come from the source; --disk says how this host reaches the shared disk,
and it is the only disk this destination opens: a source migrating another disk
(another size or content) is refused [MIGRATE_STORAGE]. With --tls-creds or
--tls-psk the link is TLS, both ends authenticated before any migration byte,
and the key for page hashes comes from the TLS session; a peer without the
credentials is dropped. Without them it listens only on loopback or a Unix
socket unless --insecure says otherwise [MIGRATE_INSECURE].

--memory, if given, allocates and faults in that much memory and boots the
guest's thread before the source connects (as QEMU's -m with -mem-prealloc),
which keeps that work out of the migration; a guest of another size is then
refused. --paused leaves the arrived guest
paused (as QEMU's -S) until 'livemig resume', e.g. to compare its memory with
the source's first ('livemig fingerprint' on both). --stay keeps the agent
after its guest has migrated away (and been stopped here, with --keep-paused):
it waits on the same address for the next guest, as an agent of the host.

  --memory SIZE        guest memory, e.g. 1GiB (regions of at most 1 GiB)
  --tls-creds DIR      x509 credentials as QEMU's tls-creds-x509: ca-cert.pem,
                       server-cert.pem, server-key.pem (the source must present
                       a client certificate the same CA signed)
  --tls-psk FILE       a pre-shared key file of IDENTITY:HEXKEY lines (psktool, nbdkit)
  --insecure           allow --incoming without TLS on an address other hosts reach
  --disk URI|PATH      nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=S, or a file
  --workload PROFILE   ${Object.entries(WORKLOADS).map(([n, w]) => `${n} (${w.summary})`).join('\n                       ')}
  --control SOCKET     Unix socket for status|pause|resume|stop|throttle|dump-memory|migrate
  --state-dir DIR      where p2b.sqlite lives (default: $TMPDIR/livemig-NAME)
  --seed N             workload seed (default 1): same seed, same operations
  --dirty-rate RATE    for 'dirty', e.g. 64MiB (per second; default 32MiB)
  --write-rate RATE    for 'diskwrite' (per second; default 8MiB)
  --write-size BYTES   for 'dirty': bytes rewritten in each dirtied page (1..4096; default 4096)
  --heap KIND          what heap pages hold: random (default: mostly random bytes) or
                       compressible (records, small integers, text, zero runs)
  --json               print {name, control, p2b, ...} as one line once running
  --log-level LEVEL    pino log on stderr: the migration's phases at debug (default silent)`;

type Values = ReturnType<typeof parseRun>['values'];

function parseRun(args: string[]) {
  return parse(args, {
    name: { type: 'string' },
    memory: { type: 'string' },
    disk: { type: 'string' },
    workload: { type: 'string' },
    control: { type: 'string' },
    'state-dir': { type: 'string' },
    seed: { type: 'string' },
    'dirty-rate': { type: 'string' },
    'write-rate': { type: 'string' },
    'write-size': { type: 'string' },
    heap: { type: 'string' },
    incoming: { type: 'string' },
    paused: { type: 'boolean' },
    'tls-creds': { type: 'string' },
    'tls-psk': { type: 'string' },
    insecure: { type: 'boolean' },
    stay: { type: 'boolean' },
  });
}

const stateDirFor = (values: Values) => (name: string) => resolve(values['state-dir'] ?? join(tmpdir(), `livemig-${name}`));

function memoryOption(value: string): number {
  const bytes = sizeOption('--memory', value);
  if (bytes % 4096) throw new UsageError('--memory must be a multiple of 4 KiB');
  return bytes;
}

/** `run --incoming`: a destination waiting for a guest (again and again, with --stay). */
async function runIncoming(values: Values, control: string, agent: Agent, log: Logger): Promise<number> {
  for (const flag of ['name', 'workload', 'seed', 'dirty-rate', 'write-rate', 'write-size', 'heap'] as const) {
    if (values[flag] !== undefined) throw new UsageError(`--${flag} comes from the source with --incoming`);
  }
  if (!values.disk) throw new UsageError('run --incoming needs --disk: the destination opens only its own disk, never one the source names');
  const at = asUsage(() => parseLinkAddress(values.incoming!));
  const memoryBytes = values.memory === undefined ? undefined : memoryOption(values.memory);
  if (values.insecure && (values['tls-creds'] || values['tls-psk'])) throw new UsageError('--insecure goes without --tls-creds and --tls-psk');
  const security = loadLinkSecurity({ tlsCreds: values['tls-creds'], tlsPsk: values['tls-psk'] }, 'server');
  const where = at.transport === 'unix' ? { host: '', port: 0, socketPath: resolve(at.path) } : { host: at.host, port: at.port };
  const disk = values.disk;
  const listen = (port: number) => listenIncoming({
    ...where, port, security, insecure: values.insecure, disk, stateDir: stateDirFor(values), memoryBytes, hold: values.paused, log,
  });
  let inc = await listen(where.port);
  const port = inc.port; // the next guest comes to the same address
  agent.incoming = inc;
  const server = await serveControl(control, agent);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => (inc.close(), void agent.stop()));
  const tls = security ? ` (TLS, ${security.credentials.kind})` : '';
  if (values.json) console.log(JSON.stringify({ incoming: inc.address, tls: security?.credentials.kind ?? null, control }));
  else console.log(`waiting for a guest on ${inc.address}${tls}\n  control ${control}`);
  let stopped = false;
  void agent.finished.then(() => (stopped = true));
  void (async () => {
    for (;;) {
      const g = await inc.guest.catch(() => null);
      if (!g) return; // stopped waiting
      const gone = agent.guestGone();
      agent.guestHere = g;
      if (!values.json) console.log(`${g.config.name} arrived and ${values.paused ? 'waits here, paused' : 'runs here'}: ${formatBytes(g.config.memoryBytes)}, workload ${g.config.workload}`);
      if (!values.stay) return;
      await Promise.race([gone, agent.finished]);
      if (stopped) return;
      agent.incoming = inc = await agent.during(listen(port));
    }
  })();
  await agent.finished;
  server.close();
  return 0;
}

/** `run`: starts a guest here. */
async function runGuest(values: Values, control: string, agent: Agent): Promise<number> {
  for (const flag of ['paused', 'tls-creds', 'tls-psk', 'insecure'] as const) {
    if (values[flag] !== undefined) throw new UsageError(`--${flag} goes with --incoming`);
  }
  for (const required of ['name', 'memory', 'disk', 'workload'] as const) {
    if (!values[required]) throw new UsageError(`run needs --${required}`);
  }
  workloadOption(values.workload!);
  const memoryBytes = memoryOption(values.memory!);
  const seed = values.seed === undefined ? 1 : Number(values.seed);
  if (!Number.isInteger(seed)) throw new UsageError('--seed must be an integer');
  const strip = (v: string) => v.replace(/\/s$/, '');
  const options = {
    seed,
    ...(values['dirty-rate'] ? { dirtyRate: sizeOption('--dirty-rate', strip(values['dirty-rate'])) } : {}),
    ...(values['write-rate'] ? { writeRate: sizeOption('--write-rate', strip(values['write-rate'])) } : {}),
    ...heapOptions(values['heap'], values['write-size']),
  };
  const name = values.name!;
  const guest = await Guest.start({ name, memoryBytes, disk: values.disk!, workload: values.workload!, options, stateDir: stateDirFor(values)(name) });
  agent.guestHere = guest;
  prepareMigration(guest); // hashing threads idle until a migration, instead of booting inside it
  const server = await serveControl(control, agent);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void agent.stop());
  const s = await guest.status();
  if (values.json) console.log(JSON.stringify({ name, control, memoryBytes, workload: values.workload, disk: s.disk.description, p2b: s.p2b.path }));
  else console.log(`${name} running: ${formatBytes(memoryBytes)}, workload ${values.workload}, disk ${s.disk.description}\n  control ${control}\n  p2b map ${s.p2b.path}`);
  await agent.finished;
  server.close();
  return 0;
}

export async function run(args: string[]): Promise<number> {
  const { values } = parseRun(args);
  if (values.help) return void console.log(help), 0;
  if (!values.control) throw new UsageError('run needs --control');
  const log = createLogger(logLevel(values['log-level']));
  if (values.stay && !values.incoming) throw new UsageError('--stay goes with --incoming');
  const agent = new Agent(log, values.stay);
  const control = resolve(values.control);
  return values.incoming ? runIncoming(values, control, agent, log) : runGuest(values, control, agent);
}
