/** `livemig qemu-proxy`: carry a stock QEMU guest's migration stream, page-cache pages as block references. */
import { isNbdUri, parseNbdUri } from '../../../nbd/index.ts';
import { createLogger } from '../../log/logger.ts';
import { formatEndpoint, parseEndpoint, runDestinationProxy, runSourceProxy, type Endpoint } from '../../proxy/index.ts';
import type { ProgressHook, ProxyProgress } from '../../proxy/progress.ts';
import { formatBytes, formatRate } from '../../util/size.ts';
import { asUsage, logLevel, parse, rateOption, sizeOption } from '../parse.ts';
import { parseTcpAddress } from '../tcp-address.ts';
import { UsageError } from '../usage-error.ts';
import { loadLinkSecurity, type LinkSecurity } from '../../wire/index.ts';
import type { TlsEnd } from '../../../nbd/index.ts';

export const help = `Usage: livemig qemu-proxy --from unix:PATH|tcp://HOST:PORT --to tcp://DEST:PORT
                          --disk NBD-URI|PATH [--index unix:PATH|tcp://HOST:PORT]
                          [--index-export NAME] [--max-bandwidth RATE] [--keep SIZE] [--window SIZE]
                          [--tls-creds DIR | --tls-psk FILE] [--json]
       livemig qemu-proxy --listen tcp://HOST:PORT|unix:PATH --to unix:PATH|tcp://HOST:PORT
                          --disk NBD-URI|PATH [--window SIZE]
                          [--tls-creds DIR | --tls-psk FILE | --insecure] [--json]

Carries one live migration of a stock QEMU guest (precopy, QEMU 7.2 or later)
between two hosts that see its disk on shared storage. On the source host QEMU
migrates to this proxy ('migrate unix:PATH'); each RAM page the storage's content
index knows ('livemig nbd serve --content-index') travels as a block reference
with a keyed hash, the rest as it is. On the destination host the proxy reads the
referenced blocks from the disk, checks each against its hash (asking the source
for the page in full if it differs), and writes QEMU's exact stream to the QEMU
waiting with '-incoming'. Any failure fails QEMU's migration: the source QEMU
resumes its guest. One migration per run; the proxy then exits.

Source (--from):
  --from ADDRESS      where QEMU migrates to: unix:PATH or tcp://HOST:PORT
  --to tcp://H:P      the destination proxy
  --disk URI|PATH     the guest's disk as this host reaches it (its identity is
                      compared with the destination's)
  --index ADDRESS     the content index's query socket (--content-index-listen
                      of 'livemig nbd serve'); without it every page goes in full
  --index-export NAME the export the index belongs to (default: --disk's export)
  --max-bandwidth R   limit on the link between the proxies, e.g. 1Gbit (default
                      none; QEMU's own max-bandwidth limits QEMU to this proxy)
  --keep SIZE         referenced pages kept until the destination acknowledges
                      them, to answer re-requests (default 256MiB); QEMU's stream
                      waits while more is kept
  --window SIZE       QEMU's stream in flight between the two QEMUs (read here,
                      not yet written to the destination QEMU) before QEMU's
                      stream waits (default 8MiB): what still drains after QEMU
                      pauses the guest
Destination (--listen):
  --listen ADDRESS    where the source proxy connects (port 0 picks one); without
                      credentials only loopback or unix:PATH [MIGRATE_INSECURE]
  --insecure          allow a link in clear on an address other hosts can reach
  --to ADDRESS        QEMU's -incoming: unix:PATH or tcp://HOST:PORT
  --disk URI|PATH     the guest's disk as this host reaches it; references are
                      read from here only
  --window SIZE       stream held here while blocks are read (default 16MiB)
Both:
  --tls-creds DIR     x509 credentials as QEMU's tls-creds-x509 (ca-cert.pem and
                      server-cert.pem, server-key.pem on the destination,
                      client-cert.pem, client-key.pem on the source); both ends verified
  --tls-psk FILE      a pre-shared key file of IDENTITY:HEXKEY lines, the same on both
                      hosts; a peer with other credentials is dropped before HELLO
  --json              print the result as one JSON object
  --log-level LEVEL   pino log on stderr (default silent)

Example (source host, then 'migrate unix:/run/vm1-mig.sock' in QEMU's monitor):
  livemig qemu-proxy --from unix:/run/vm1-mig.sock --to tcp://dest:4444 \\
      --disk nbd://nas:10809/vm1 --index tcp://nas:10810 --tls-psk /etc/livemig/keys.psk`;

const OPTIONS = {
  from: { type: 'string' }, to: { type: 'string' }, listen: { type: 'string' }, disk: { type: 'string' },
  index: { type: 'string' }, 'index-export': { type: 'string' }, 'max-bandwidth': { type: 'string' },
  keep: { type: 'string' }, window: { type: 'string' }, name: { type: 'string' },
  'tls-creds': { type: 'string' }, 'tls-psk': { type: 'string' }, insecure: { type: 'boolean' },
} as const;

type Values = ReturnType<typeof parse<typeof OPTIONS>>['values'];

const endpoint = (flag: string, value: string): Endpoint => asUsage(() => {
  try {
    return parseEndpoint(value);
  } catch (err) {
    throw new Error(`${flag}: ${(err as Error).message.replace(/^--listen /, '')}`);
  }
});

function refuse(values: Values, flags: (keyof Values)[], role: string): void {
  for (const f of flags) if (values[f] !== undefined) throw new UsageError(`--${String(f)} is for the ${role} proxy`);
}

/** A line on stderr while it runs, on a terminal and without --json. */
function ticker(values: Values): { hook: ProgressHook; stop: () => void } {
  let read: (() => ProxyProgress) | null = null;
  const tty = process.stderr.isTTY && !values.json;
  const timer = tty
    ? setInterval(() => {
        const p = read?.();
        if (p && p.phase !== 'waiting') process.stderr.write(`\r\x1b[K${p.phase}: stream ${formatBytes(p.streamBytes)}, ${p.refPages} pages as references, link ${formatBytes(p.linkBytes)}`);
      }, 250)
    : null;
  return { hook: (r) => (read = r), stop: () => timer && (clearInterval(timer), process.stderr.write('\r\x1b[K')) };
}

/** The credentials named by --tls-creds or --tls-psk, loaded for this end (null: none). */
function security(values: Values, end: TlsEnd): LinkSecurity | null {
  if (values['tls-creds'] && values['tls-psk']) throw new UsageError('give --tls-creds or --tls-psk, not both');
  return loadLinkSecurity({ tlsCreds: values['tls-creds'], tlsPsk: values['tls-psk'] }, end);
}

function defaultExport(disk: string): string {
  return isNbdUri(disk) ? parseNbdUri(disk).exportName : '';
}

async function source(values: Values, signal: AbortSignal, hook: ProgressHook): Promise<object> {
  refuse(values, ['listen', 'insecure'], 'destination');
  if (!values.to || !values.disk) throw new UsageError('the source proxy needs --from ADDRESS, --to tcp://HOST:PORT and --disk URI|PATH');
  const to = asUsage(() => parseTcpAddress(values.to!));
  const keepBytes = sizeOption('--keep', values.keep ?? '256MiB');
  if (keepBytes < 16 << 20) throw new UsageError('--keep must be at least 16MiB');
  const windowBytes = sizeOption('--window', values.window ?? '8MiB');
  if (windowBytes < 1 << 20) throw new UsageError('--window must be at least 1MiB');
  const log = createLogger(logLevel(values['log-level'])).child({ side: 'source-proxy' });
  const result = await runSourceProxy({
    from: endpoint('--from', values.from!), to, security: security(values, 'client'), disk: values.disk,
    index: values.index ? { address: values.index, exportName: values['index-export'] ?? defaultExport(values.disk) } : null,
    maxBandwidth: values['max-bandwidth'] === undefined ? 0 : rateOption('--max-bandwidth', values['max-bandwidth']),
    keepBytes, windowBytes, name: values.name ?? 'qemu', log, progress: hook,
    onListening: (at) => console.error(`livemig qemu-proxy: waiting for QEMU on ${formatEndpoint(at)}`),
  }, signal);
  if (!values.json) {
    console.log(`migrated ${formatBytes(result.ramBytes)} of RAM (${result.machine}): stream ${formatBytes(result.streamBytes)}, link ${formatBytes(result.linkBytes)} (limit ${formatRate(result.maxBandwidth)}), ${result.totalMs} ms`);
    console.log(`  pages: ${result.pages.ref} as references in ${result.refRuns} runs (${result.refRetried} re-sent in full), ${result.pages.full} in full, ${result.pages.zero} zero`);
  }
  return result;
}

async function destination(values: Values, signal: AbortSignal, hook: ProgressHook): Promise<object> {
  refuse(values, ['from', 'index', 'index-export', 'max-bandwidth', 'keep', 'name'], 'source');
  if (!values.to || !values.disk) throw new UsageError('the destination proxy needs --listen ADDRESS, --to ADDRESS (QEMU\'s -incoming) and --disk URI|PATH');
  const windowBytes = sizeOption('--window', values.window ?? '16MiB');
  if (windowBytes < 1 << 20) throw new UsageError('--window must be at least 1MiB');
  if (values.insecure && (values['tls-creds'] || values['tls-psk'])) throw new UsageError('--insecure goes without --tls-creds and --tls-psk');
  const log = createLogger(logLevel(values['log-level'])).child({ side: 'destination-proxy' });
  const result = await runDestinationProxy({
    listen: endpoint('--listen', values.listen!), security: security(values, 'server'), insecure: values.insecure,
    to: endpoint('--to', values.to), disk: values.disk, windowBytes, log, progress: hook,
    onListening: (at) => console.error(`livemig qemu-proxy: waiting for the source proxy on ${formatEndpoint(at)}`),
  }, signal);
  if (!values.json) {
    console.log(`fed QEMU ${formatBytes(result.streamBytes)} of stream; link ${formatBytes(result.linkBytes)}, ${result.totalMs} ms`);
    console.log(`  ${result.refPages} referenced pages read from the disk (${formatBytes(result.fetchedBytes)}), ${result.refRetried} asked for in full`);
  }
  return result;
}

export async function run(args: string[]): Promise<number> {
  const { values } = parse(args, OPTIONS);
  if (values.help) return void console.log(help), 0;
  if (!values.from === !values.listen) throw new UsageError('qemu-proxy needs --from (source proxy) or --listen (destination proxy), not both');
  const abort = new AbortController();
  const stop = () => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const tick = ticker(values);
  try {
    const result = values.from ? await source(values, abort.signal, tick.hook) : await destination(values, abort.signal, tick.hook);
    if (values.json) console.log(JSON.stringify(result));
    return 0;
  } finally {
    tick.stop();
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
