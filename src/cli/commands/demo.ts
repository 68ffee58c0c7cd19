/** `livemig demo`: a whole live migration on this machine, with embedded defaults and a summary. */
import { resolve } from 'node:path';
import { parse, logLevel, sizeOption, rateOption, durationOption, strategyOption, workloadOption } from '../parse.ts';
import { UsageError } from '../usage-error.ts';
import { runLocalMigration } from '../../demo/local-migration.ts';
import { formatResult } from './migrate.ts';
import { CODEC_HELP, codecOptions, heapOptions } from '../page-options.ts';

export const help = `Usage: livemig demo [--memory 256MiB] [--workload pagecache] [--strategy auto]
                    [--max-bandwidth 1Gbit] [--downtime-limit 300] [--seed N]
                    [--heap random|compressible] [--write-size BYTES]
                    [--compress auto|always|off] [--xbzrle-cache SIZE]
                    [--check full|digests] [--tls-psk FILE | --tls-creds DIR] [--json]

Runs a whole live migration on this machine: livemig's NBD server over a
generated disk image in a temp dir, an emulated guest warmed up on it, a source
and a destination agent talking over TCP. Prints a summary; --json prints one
object with strategy, workload, memoryBytes, verified, totalTimeMs, downtimeMs,
rounds, linkBytes, nasBytes, pages{full,zero,ref,refRetried}, check, checkMs
and more. Exit 1 if the destination's memory does not verify.

  --check full      (default) besides the engine's keyed memory digests, hold
                    both guests paused at the switch-over and compare their
                    memories from scratch, every byte (SHA-256 per MiB, sharing
                    nothing with the engine); its cost is checkMs, not downtime
  --check digests   the production check only: the engine's memory digests
  --tls-psk FILE    the migration link is TLS with this pre-shared key file
                    (IDENTITY:HEXKEY lines), for both agents
  --tls-creds DIR   the migration link is TLS with these x509 credentials (QEMU's
                    names: ca-cert.pem, server-cert.pem, server-key.pem,
                    client-cert.pem, client-key.pem); wireBytes then counts the
                    TLS records and handshake on top of linkBytes
  --heap, --write-size  the guest's heap content and write size (livemig run)
${CODEC_HELP}
  --log-level LEVEL pino log of every process on stderr (debug: the phases)`;

export async function run(args: string[]): Promise<number> {
  const { values } = parse(args, {
    memory: { type: 'string' },
    workload: { type: 'string' },
    strategy: { type: 'string' },
    'max-bandwidth': { type: 'string' },
    'downtime-limit': { type: 'string' },
    seed: { type: 'string' },
    check: { type: 'string' },
    'tls-psk': { type: 'string' },
    'tls-creds': { type: 'string' },
    heap: { type: 'string' },
    'write-size': { type: 'string' },
    compress: { type: 'string' },
    'xbzrle-cache': { type: 'string' },
  });
  if (values.help) return void console.log(help), 0;
  const memoryBytes = sizeOption('--memory', values.memory ?? '256MiB');
  if (memoryBytes % 4096) throw new UsageError('--memory must be a multiple of 4 KiB');
  const workload = workloadOption(values.workload ?? 'pagecache');
  const strategy = strategyOption(values.strategy ?? 'auto');
  const maxBandwidth = rateOption('--max-bandwidth', values['max-bandwidth'] ?? '1Gbit');
  const downtimeLimitMs = durationOption('--downtime-limit', values['downtime-limit'] ?? '300');
  const seed = values.seed === undefined ? 1 : Number(values.seed);
  const check = values.check ?? 'full';
  if (check !== 'full' && check !== 'digests') throw new UsageError('--check must be full or digests');
  if (values['tls-psk'] && values['tls-creds']) throw new UsageError('give --tls-psk or --tls-creds, not both');
  const tls = { ...(values['tls-creds'] ? { tlsCreds: resolve(values['tls-creds']) } : {}), ...(values['tls-psk'] ? { tlsPsk: resolve(values['tls-psk']) } : {}) };

  const heap = heapOptions(values.heap, values['write-size']);
  const codecs = codecOptions(values.compress, values['xbzrle-cache']);
  const tty = process.stderr.isTTY && !values.json;
  const say = (m: string) => (tty ? process.stderr.write(`\r\x1b[K${m}`) : undefined);
  const result = await runLocalMigration({
    memoryBytes, workload, strategy, maxBandwidth, downtimeLimitMs, seed, check, tls, logLevel: logLevel(values['log-level']), ...heap, codecs,
    onPhase: say,
    onRound: (r) => say(`round ${r.round}: ${r.pages} pages (${r.ref} references), ${r.dirtyAfter} dirty after, estimated downtime ${Math.round(r.estimatedDowntimeMs)} ms`),
  });
  if (tty) process.stderr.write('\r\x1b[K');
  if (values.json) console.log(JSON.stringify(result));
  else {
    console.log(formatResult(result));
    const o = result.oracle;
    console.log(o
      ? `  check: full: memories compared from scratch at the switch-over: ${o.equal ? 'equal' : `${o.differentChunks} MiB DIFFER (first at byte ${o.firstDifference})`} (${result.checkMs} ms, not downtime)`
      : '  check: digests: the engine\'s keyed memory digests only');
    console.log(`  destination guest ${result.destinationRunning ? 'running' : 'NOT running'} after the switch`);
  }
  return result.verified && result.destinationRunning ? 0 : 1;
}
