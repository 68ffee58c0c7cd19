/** `livemig nbd serve`: the project's own NBD server over files and memory. */
import { NbdServer, FileExport, MemoryExport, parseListenAddress, MIN_MAX_REQUEST, MAX_MAX_REQUEST, type ExportSpec } from '../../../nbd/index.ts';
import { createLogger } from '../../log/logger.ts';
import { parse, logLevel, sizeOption, asUsage } from '../parse.ts';
import { UsageError } from '../usage-error.ts';
import { formatBytes } from '../../util/size.ts';

export const help = `Usage: livemig nbd serve --export [NAME=]PATH [--read-only] [--export …]
                         [--memory-export NAME=SIZE] [--listen ADDRESS] [--json]

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
  --max-request SIZE         largest read/write accepted, advertised to clients
                             (default 64MiB, as nbdkit; 4KiB to 1GiB); a larger
                             one gets EINVAL and the connection goes on
  --json                     print the listening address and exports as one
                             JSON line on stdout
  --log-level LEVEL          pino log on stderr (default silent)

Example:
  livemig nbd serve --export disk.img --listen tcp://127.0.0.1:10809
  nbdinfo nbd://127.0.0.1:10809/`;

interface PlannedExport {
  name: string;
  kind: 'file' | 'memory';
  source: string;
  size?: number;
  readOnly: boolean;
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

export async function run(args: string[]): Promise<number> {
  const { values, tokens } = parse(args, {
    export: { type: 'string', multiple: true },
    'memory-export': { type: 'string', multiple: true },
    'read-only': { type: 'boolean' },
    listen: { type: 'string' },
    'max-request': { type: 'string' },
  });
  if (values.help) {
    console.log(help);
    return 0;
  }
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
  const listen = asUsage(() => parseListenAddress(values.listen ?? 'tcp://127.0.0.1:10809'));
  const maxRequest = values['max-request'] ? sizeOption('--max-request', values['max-request']) : undefined;
  if (maxRequest !== undefined && (maxRequest < MIN_MAX_REQUEST || maxRequest > MAX_MAX_REQUEST)) {
    throw new UsageError(`--max-request: ${values['max-request']} is out of range (4KiB to 1GiB)`);
  }
  const logger = createLogger(logLevel(values['log-level']));

  const specs: ExportSpec[] = [];
  try {
    for (const p of plan) {
      const backend = p.kind === 'file' ? await FileExport.open(p.source, { readOnly: p.readOnly }) : new MemoryExport(p.size!, p.readOnly);
      specs.push({ name: p.name, backend });
    }
  } catch (err) {
    await Promise.all(specs.map((s) => s.backend.close()));
    throw err;
  }
  const server = new NbdServer(specs, { logger, maxRequest });
  await server.listen(listen);

  const summary = specs.map((s) => ({
    name: s.name,
    uri: server.uri(s.name),
    size: s.backend.size,
    readOnly: s.backend.readOnly,
    description: s.backend.description,
  }));
  if (values.json) console.log(JSON.stringify({ listening: server.uri(), exports: summary }));
  else {
    console.log(`livemig nbd serve: listening on ${server.uri()}`);
    for (const e of summary) {
      console.log(`  ${e.uri}  ${e.description}, ${formatBytes(e.size)}${e.readOnly ? ', read-only' : ''}`);
    }
  }

  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.close();
  await Promise.all(specs.map((s) => s.backend.close()));
  return 0;
}
