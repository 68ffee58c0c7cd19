/** `livemig nbd serve`: the project's own NBD server over files and memory. */
import cluster, { type Worker } from 'node:cluster';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import os from 'node:os';
import {
  NbdServer, FileExport, MemoryExport, parseListenAddress, formatNbdUri, loadX509, loadPsk, MIN_MAX_REQUEST, MAX_MAX_REQUEST,
  type ExportSpec, type ListenAddress, type NbdServerOptions, type TlsMode,
} from '../../../nbd/index.ts';
import { createLogger } from '../../log/logger.ts';
import { parse, logLevel, sizeOption, asUsage } from '../parse.ts';
import { UsageError } from '../usage-error.ts';
import { ServedIndexes } from '../../storage/content-index/served-exports.ts';
import { DEFAULT_CAPACITY } from '../../storage/content-index/content-index.ts';
import { formatBytes } from '../../util/size.ts';

export const help = `Usage: livemig nbd serve --export [NAME=]PATH [--read-only] [--export …]
                         [--memory-export NAME=SIZE] [--listen ADDRESS]
                         [--tls off|on|require] [--tls-creds DIR | --tls-psk FILE]
                         [--workers N] [--max-request SIZE] [--json]
                         [--content-index DIR [--content-index-max N]
                          [--content-index-listen ADDRESS]]

Serve files and memory over NBD (fixed newstyle; structured replies; many
clients at once). Runs in the foreground until SIGINT or SIGTERM.

  --export [NAME=]PATH       a file or block device; without NAME it is the
                             default export "". Locked with flock so no other
                             server can export it read-write at the same time.
  --memory-export NAME=SIZE  a sparse in-memory export, e.g. scratch=1GiB
  --read-only                after an export: that export is read-only;
                             before every export: all of them are
  --listen ADDRESS           tcp://HOST:PORT or unix:PATH
                             (default tcp://127.0.0.1:10809; port 0 picks one)
  --tls-creds DIR            x509 credentials as QEMU's tls-creds-x509 names
                             them: ca-cert.pem, server-cert.pem, server-key.pem;
                             clients must present a certificate the CA signed
  --tls-psk FILE             pre-shared keys, one IDENTITY:HEXKEY per line (as
                             nbdkit --tls-psk and psktool)
  --tls MODE                 off: no TLS; on: clients may upgrade; require: no
                             option is answered before NBD_OPT_STARTTLS
                             (default: require with credentials, else off)
  --workers N                processes that share the listening socket, each
                             serving the connections it accepts (default: the
                             CPU count up to 4; 1 with memory exports, which
                             cannot be shared). Leases (one writer per export,
                             docs/nbd.md) are offered with one process only
  --max-request SIZE         largest read/write accepted, advertised to clients
                             (default 64MiB, as nbdkit; 4KiB to 1GiB); a larger
                             one gets EINVAL and the connection goes on
  --json                     print the listening address, the exports and the
                             serving processes' pids as one JSON line on stdout
  --log-level LEVEL          pino log on stderr (default silent)
  --content-index DIR        keep a content index per export (content hash of
                             each 4 KiB block read or written -> block), for
                             the QEMU stream proxy; DIR/<export>.cindex.sqlite.
                             One process serves (--workers 1): the index is its own
  --content-index-max N      entries per export (default 4194304, ~114 MiB)
  --content-index-listen ADDRESS
                             answer index lookups on tcp://HOST:PORT or
                             unix:PATH (JSON lines; no authentication)

Example:
  livemig nbd serve --export disk.img --listen tcp://127.0.0.1:10809
  nbdinfo nbd://127.0.0.1:10809/
  livemig nbd serve --export disk.img --tls-psk keys.psk --listen tcp://0.0.0.0:10809
  nbdinfo 'nbds://alice@HOST/?tls-psk-file=keys.psk'`;

interface PlannedExport {
  name: string;
  kind: 'file' | 'memory';
  source: string;
  size?: number;
  readOnly: boolean;
}

interface Options {
  plan: PlannedExport[];
  listen: ListenAddress;
  tls: TlsMode;
  /** Where the credentials are; each process loads them itself. */
  tlsSource: { kind: 'x509' | 'psk'; path: string } | null;
  workers: number;
  maxRequest?: number;
  json: boolean;
  logger: ReturnType<typeof createLogger>;
  index: { dir: string; capacity: number; listen: ListenAddress | null } | null;
}

function splitNamed(value: string, flag: string, requireName: boolean): [string, string] {
  const eq = value.indexOf('=');
  // A '=' after a '/' belongs to the path, not to a NAME= prefix.
  if (eq < 0 || value.slice(0, eq).includes('/')) {
    if (requireName) throw new UsageError(`${flag} needs NAME=SIZE, got ${JSON.stringify(value)}`);
    return ['', value];
  }
  return [value.slice(0, eq), value.slice(eq + 1)];
}

/** The exports in command-line order; --read-only binds to the export before it, or to all. */
function planExports(tokens: ReturnType<typeof parse>['tokens']): PlannedExport[] {
  const plan: PlannedExport[] = [];
  let allReadOnly = false;
  for (const t of tokens ?? []) {
    if (t.kind !== 'option') continue;
    if (t.name === 'export') {
      const [name, path] = splitNamed(t.value!, '--export', false);
      if (!path) throw new UsageError(`--export ${t.value}: missing PATH`);
      plan.push({ name, kind: 'file', source: path, readOnly: allReadOnly });
    } else if (t.name === 'memory-export') {
      const [name, size] = splitNamed(t.value!, '--memory-export', true);
      plan.push({ name, kind: 'memory', source: 'memory', size: sizeOption('--memory-export', size), readOnly: allReadOnly });
    } else if (t.name === 'read-only') {
      if (plan.length === 0) allReadOnly = true;
      else plan[plan.length - 1].readOnly = true;
    }
  }
  if (plan.length === 0) throw new UsageError('nbd serve needs at least one --export or --memory-export');
  const names = new Set<string>();
  for (const p of plan) {
    if (names.has(p.name)) throw new UsageError(`export name ${JSON.stringify(p.name)} given twice`);
    names.add(p.name);
  }
  return plan;
}

function parseOptions(args: string[]): Options | null {
  const { values, tokens } = parse(args, {
    export: { type: 'string', multiple: true },
    'memory-export': { type: 'string', multiple: true },
    'read-only': { type: 'boolean' },
    listen: { type: 'string' },
    workers: { type: 'string' },
    'max-request': { type: 'string' },
    tls: { type: 'string' },
    'tls-creds': { type: 'string' },
    'tls-psk': { type: 'string' },
    'content-index': { type: 'string' },
    'content-index-max': { type: 'string' },
    'content-index-listen': { type: 'string' },
  });
  if (values.help) return null;
  const index = indexOptions(values['content-index'], values['content-index-max'], values['content-index-listen']);
  const { tls, tlsSource } = tlsOptions(values.tls, values['tls-creds'], values['tls-psk']);
  const plan = planExports(tokens);
  const maxRequest = values['max-request'] ? sizeOption('--max-request', values['max-request']) : undefined;
  if (maxRequest !== undefined && (maxRequest < MIN_MAX_REQUEST || maxRequest > MAX_MAX_REQUEST)) {
    throw new UsageError(`--max-request: ${values['max-request']} is out of range (4KiB to 1GiB)`);
  }
  const shareable = plan.every((p) => p.kind === 'file') && !index;
  let workers = shareable ? Math.min(os.availableParallelism(), 4) : 1;
  if (values.workers !== undefined) {
    workers = Number(values.workers);
    if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new UsageError(`--workers: expected 1 to 64, got ${JSON.stringify(values.workers)}`);
    if (workers > 1 && index) throw new UsageError('--workers above 1 and --content-index exclude each other: the index lives in one process');
    if (workers > 1 && !shareable) throw new UsageError('--workers above 1 needs file exports only: a memory export cannot be shared between processes');
  }
  return {
    plan,
    listen: asUsage(() => parseListenAddress(values.listen ?? 'tcp://127.0.0.1:10809')),
    tls,
    tlsSource,
    workers,
    maxRequest,
    json: values.json ?? false,
    logger: createLogger(logLevel(values['log-level'])),
    index,
  };
}

function indexOptions(dir: string | undefined, max: string | undefined, listen: string | undefined): Options['index'] {
  if (!dir) {
    if (max || listen) throw new UsageError('--content-index-max and --content-index-listen need --content-index DIR');
    return null;
  }
  const capacity = max === undefined ? DEFAULT_CAPACITY : Number(max);
  if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > 2 ** 30) throw new UsageError(`--content-index-max must be an integer from 1 to ${2 ** 30}, got ${JSON.stringify(max)}`);
  return { dir, capacity, listen: listen ? asUsage(() => parseListenAddress(listen)) : null };
}

function tlsOptions(mode: string | undefined, creds: string | undefined, psk: string | undefined): Pick<Options, 'tls' | 'tlsSource'> {
  if (creds && psk) throw new UsageError('--tls-creds and --tls-psk exclude each other');
  const tlsSource = creds ? { kind: 'x509' as const, path: creds } : psk ? { kind: 'psk' as const, path: psk } : null;
  if (mode !== undefined && !['off', 'on', 'require'].includes(mode)) throw new UsageError(`--tls must be off, on or require, not ${JSON.stringify(mode)}`);
  const tls = (mode ?? (tlsSource ? 'require' : 'off')) as TlsMode;
  if (tls !== 'off' && !tlsSource) throw new UsageError(`--tls=${tls} needs --tls-creds DIR or --tls-psk FILE`);
  return { tls, tlsSource };
}

function serverOptions(opts: Options): NbdServerOptions {
  const src = opts.tlsSource;
  const tlsCredentials = opts.tls === 'off' || !src ? undefined : src.kind === 'x509' ? loadX509(src.path, 'server') : loadPsk(src.path);
  // A lease lives in one process's memory: shared between workers it would not be one.
  return { logger: opts.logger, maxRequest: opts.maxRequest, tls: opts.tls, tlsCredentials, leases: opts.workers === 1 };
}

/**
 * Opens every export. The process that holds the flocks opens with `lock`; workers
 * beside it open unlocked.
 */
async function openExports(plan: PlannedExport[], lock: boolean): Promise<ExportSpec[]> {
  const specs: ExportSpec[] = [];
  try {
    for (const p of plan) {
      const backend = p.kind === 'file' ? await FileExport.open(p.source, { readOnly: p.readOnly, lock }) : new MemoryExport(p.size!, p.readOnly);
      specs.push({ name: p.name, backend });
    }
  } catch (err) {
    await closeExports(specs);
    throw err;
  }
  return specs;
}

const closeExports = (specs: ExportSpec[]) => Promise.all(specs.map((s) => s.backend.close()));

function stopSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

/** What the server's content indexes add to the summary: each export's index file, and the lookup address. */
interface IndexSummary {
  indexes: ServedIndexes;
  listening: string | null;
}

function indexOf(indexes: ServedIndexes, name: string) {
  const index = indexes.get(name)!;
  return { path: index.path, capacity: index.table.capacity, reloaded: index.reloaded, reloadRefused: index.reloadRefused };
}

/** `pids`: the processes serving (with workers, their CPU time is not in the first one's). */
function printSummary(specs: ExportSpec[], listening: string, uriOf: (name: string) => string, json: boolean, pids: number[], index?: IndexSummary): void {
  const summary = specs.map((s) => ({
    name: s.name,
    uri: uriOf(s.name),
    size: s.backend.size,
    readOnly: s.backend.readOnly,
    description: s.backend.description,
    ...(index ? { contentIndex: indexOf(index.indexes, s.name) } : {}),
  }));
  if (json) return console.log(JSON.stringify({ listening, exports: summary, pids, ...(index ? { contentIndexListening: index.listening } : {}) }));
  console.log(`livemig nbd serve: listening on ${listening}`);
  for (const e of summary) {
    console.log(`  ${e.uri}  ${e.description}, ${formatBytes(e.size)}${e.readOnly ? ', read-only' : ''}`);
    const c = e.contentIndex;
    if (c) console.log(`    content index ${c.path} (${c.reloaded} entries reloaded${c.reloadRefused ? `; not reloaded: ${c.reloadRefused}` : ''})`);
  }
  if (index?.listening) console.log(`  content index lookups on ${index.listening}`);
}

/** Wraps each export in its content index's filter and opens the lookup socket, if asked. */
async function openIndexes(opts: Options, specs: ExportSpec[]): Promise<IndexSummary | undefined> {
  if (!opts.index) return undefined;
  const { dir, capacity, listen } = opts.index;
  const indexes = await ServedIndexes.open(specs.map((spec, i) => ({ spec, imagePath: opts.plan[i].kind === 'file' ? opts.plan[i].source : undefined })), { dir, capacity });
  try {
    return { indexes, listening: listen ? await indexes.listen(listen) : null };
  } catch (err) {
    await indexes.close();
    throw err;
  }
}

export async function run(args: string[]): Promise<number> {
  const opts = parseOptions(args);
  if (!opts) {
    console.log(help);
    return 0;
  }
  if (cluster.isWorker) return serveAsWorker(opts);
  serverOptions(opts); // credentials load (and fail) here, before any worker starts
  const specs = await openExports(opts.plan, true);
  try {
    return opts.workers === 1 ? await serveHere(opts, specs) : await serveWithWorkers(opts, specs);
  } finally {
    await closeExports(specs);
  }
}

/** One process: this one accepts and serves every connection. */
async function serveHere(opts: Options, specs: ExportSpec[]): Promise<number> {
  const index = await openIndexes(opts, specs);
  try {
    const server = new NbdServer(specs, serverOptions(opts));
    await server.listen(opts.listen);
    printSummary(specs, server.uri(), (name) => server.uri(name), opts.json, [process.pid], index);
    await stopSignal();
    await server.close();
  } finally {
    await index?.indexes.close();
  }
  return 0;
}

/** A worker: serves the connections the primary hands it, on the socket the primary made. */
async function serveAsWorker(opts: Options): Promise<number> {
  const specs = await openExports(opts.plan, false);
  const server = new NbdServer(specs, serverOptions(opts));
  try {
    await server.listen(opts.listen, { replaceSocket: false });
    await stopSignal();
    await server.close();
  } finally {
    await closeExports(specs);
    cluster.worker?.disconnect(); // the channel to the primary would keep this process alive
  }
  return 0;
}

/**
 * The primary holds the locks and starts `opts.workers` processes that share the
 * listening socket (node:cluster hands each accepted connection to one of them).
 * A worker that dies takes the server down with exit 1: its clients were cut off.
 */
async function serveWithWorkers(opts: Options, specs: ExportSpec[]): Promise<number> {
  if (opts.listen.transport === 'unix') rmSync(opts.listen.path, { force: true });
  const workers: Worker[] = [];
  let stopping = false;
  const died = new Promise<string>((resolve) => {
    cluster.on('exit', (w, code, signal) => {
      if (!stopping) resolve(`worker ${w.process.pid} exited (${signal ?? `code ${code}`})`);
    });
  });
  for (let i = 0; i < opts.workers; i++) workers.push(cluster.fork());
  const listening = Promise.all(workers.map(async (w) => (await once(w, 'listening')) as [{ port: number }]));
  const first = await Promise.race([listening, died]);
  if (typeof first === 'string') {
    stopping = true;
    await stopWorkers(workers);
    throw new Error(`nbd serve: ${first} before listening`);
  }
  const address: ListenAddress = opts.listen.transport === 'tcp' ? { ...opts.listen, port: first[0][0].port } : opts.listen;
  const tls = opts.tls === 'require' ? { tls: {} } : {};
  const uriOf = (exportName: string) =>
    formatNbdUri(address.transport === 'tcp' ? { transport: 'tcp', host: address.host, port: address.port, exportName, ...tls } : { transport: 'unix', socket: address.path, exportName, ...tls });
  printSummary(specs, uriOf(''), uriOf, opts.json, [process.pid, ...workers.map((w) => w.process.pid!)]);
  const outcome = await Promise.race([stopSignal().then(() => null), died]);
  stopping = true;
  await stopWorkers(workers);
  if (opts.listen.transport === 'unix') rmSync(opts.listen.path, { force: true });
  if (outcome) {
    opts.logger.error({ reason: outcome }, 'worker died; server stopped');
    console.error(`livemig: nbd serve: ${outcome}; stopped`);
    return 1;
  }
  return 0;
}

async function stopWorkers(workers: Worker[]): Promise<void> {
  await Promise.all(workers.map(async (w) => {
    if (w.isDead()) return;
    const gone = once(w, 'exit');
    w.process.kill('SIGTERM');
    const kill = setTimeout(() => w.process.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(kill);
  }));
}
