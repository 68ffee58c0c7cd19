/** `livemig migrate`: moves a guest started with `livemig run` to a destination waiting with --incoming. */
import { resolve } from 'node:path';
import { controlRequest } from '../../guest/control/client.ts';
import type { MigrateArgs } from '../../guest/control/protocol.ts';
import type { MigrationResult } from '../../migrate/result.ts';
import { parse, asUsage, rateOption, durationOption, strategyOption } from '../parse.ts';
import { UsageError } from '../usage-error.ts';
import { CODEC_HELP, codecOptions } from '../page-options.ts';
import { formatBytes, formatRate } from '../../util/size.ts';
import { parseLinkAddress } from '../../wire/index.ts';

export const help = `Usage: livemig migrate --control SOCKET --to tcp://HOST:PORT|unix:PATH [--strategy auto|p2b|baseline]
                       [--tls-creds DIR | --tls-psk FILE]
                       [--max-bandwidth RATE] [--downtime-limit MS] [--max-rounds N]
                       [--converge throttle|abort] [--keep-paused]
                       [--compress auto|always|off] [--xbzrle-cache SIZE] [--json]

Live-migrates the guest behind SOCKET to a destination started with
'livemig run --incoming tcp://HOST:PORT' (or unix:PATH). The guest keeps running here until
the destination has verified its memory and resumed it; any failure before
that leaves it running here, untouched.

  --tls-creds DIR   x509 credentials as QEMU's tls-creds-x509: ca-cert.pem,
                    client-cert.pem, client-key.pem; the destination's certificate
                    must be signed by the same CA (and name its host)
  --tls-psk FILE    a pre-shared key file of IDENTITY:HEXKEY lines, as the destination's
                    (the guest's agent reads these files when the migration starts)
  --strategy        auto (default): each mapped page goes as a block reference
                    the destination reads from the shared storage only when
                    that finishes sooner than sending it (measured link and
                    storage rates); p2b: every mapped page as a reference;
                    baseline: full and zero pages only, like stock QEMU pre-copy
  --max-bandwidth   link limit, e.g. 1Gbit, 500Mbit, 100MiB (per second); default unlimited
  --downtime-limit  stop iterating once the estimated downtime fits (default 300 ms)
  --max-rounds      rounds without converging before the policy applies (default 30)
  --converge        throttle (default: slow the guest step by step, then stop and
                    copy anyway) or abort (give up; the guest stays here)
  --keep-paused     after the switch-over keep the guest here, paused with its
                    memory intact ('postmigrate', as QEMU's), until 'livemig stop':
                    'livemig fingerprint' on both hosts then compares memories
${CODEC_HELP}

'livemig status --control SOCKET' shows the migration while it runs.`;

export function formatResult(r: MigrationResult): string {
  return [
    `migrated ${r.workload} guest (${formatBytes(r.memoryBytes)}) with ${r.strategy}: verified ${r.verified}`,
    `  total ${r.totalTimeMs} ms, downtime ${r.downtimeMs} ms (limit ${r.downtimeLimitMs}), ${r.rounds} rounds`,
    `  link ${formatBytes(r.linkBytes)} at ${formatRate(r.averageBandwidth)} (limit ${formatRate(r.maxBandwidth)}), storage reads ${formatBytes(r.nasBytes)}`,
    `  pages: ${r.pages.full} full (${r.pages.lz4} LZ4, ${r.pages.xbzrle} XBZRLE), ${r.pages.zero} zero, ${r.pages.ref} references (${r.pages.refRetried} re-sent after a failed check)`,
    `  storage ${r.storageMatch ? 'identical on both hosts' : `differs: ${r.storageReason} (references not used)`}${r.finalThrottle ? `, guest throttled to ${r.finalThrottle} %` : ''}`,
  ].join('\n');
}

export async function run(args: string[]): Promise<number> {
  const { values } = parse(args, {
    control: { type: 'string' },
    to: { type: 'string' },
    strategy: { type: 'string' },
    'max-bandwidth': { type: 'string' },
    'downtime-limit': { type: 'string' },
    'max-rounds': { type: 'string' },
    converge: { type: 'string' },
    'keep-paused': { type: 'boolean' },
    'tls-creds': { type: 'string' },
    'tls-psk': { type: 'string' },
    compress: { type: 'string' },
    'xbzrle-cache': { type: 'string' },
  });
  if (values.help) return void console.log(help), 0;
  if (!values.control || !values.to) throw new UsageError('migrate needs --control SOCKET and --to tcp://HOST:PORT');
  const at = asUsage(() => parseLinkAddress(values.to!));
  const to = at.transport === 'unix' ? `unix:${resolve(at.path)}` : values.to; // the agent may run elsewhere
  if (values['tls-creds'] && values['tls-psk']) throw new UsageError('give --tls-creds or --tls-psk, not both');
  const tls = { ...(values['tls-creds'] ? { tlsCreds: resolve(values['tls-creds']) } : {}), ...(values['tls-psk'] ? { tlsPsk: resolve(values['tls-psk']) } : {}) };
  const strategy = strategyOption(values.strategy ?? 'auto');
  const maxBandwidth = values['max-bandwidth'] === undefined ? 0 : rateOption('--max-bandwidth', values['max-bandwidth']);
  const downtimeLimitMs = durationOption('--downtime-limit', values['downtime-limit'] ?? '300');
  const maxRounds = values['max-rounds'] === undefined ? 30 : Number(values['max-rounds']);
  if (!Number.isInteger(maxRounds) || maxRounds < 1) throw new UsageError('--max-rounds must be a positive integer');
  const converge = (values.converge ?? 'throttle') as MigrateArgs['converge'];
  if (converge !== 'throttle' && converge !== 'abort') throw new UsageError('--converge must be throttle or abort');

  const socket = resolve(values.control);
  const codecs = codecOptions(values.compress, values['xbzrle-cache']);
  const request: MigrateArgs = { to, ...tls, strategy, maxBandwidth, downtimeLimitMs, maxRounds, converge, keepPaused: values['keep-paused'], ...codecs };
  // A progress line on a terminal, read from `status` while the migration runs.
  const tty = process.stderr.isTTY && !values.json;
  const ticker = tty
    ? setInterval(async () => {
        const s = await controlRequest<{ migration?: { rounds: number; lastRound?: { dirtyAfter: number; estimatedDowntimeMs: number } } }>(socket, 'status').catch(() => null);
        const m = s?.migration;
        if (m?.lastRound) process.stderr.write(`\r\x1b[Kround ${m.rounds}: ${m.lastRound.dirtyAfter} pages dirty, estimated downtime ${Math.round(m.lastRound.estimatedDowntimeMs)} ms`);
      }, 250)
    : null;
  try {
    const result = await controlRequest<MigrationResult>(socket, 'migrate', { migrate: request }, 3_600_000);
    if (values.json) console.log(JSON.stringify(result));
    else console.log(formatResult(result));
    return 0;
  } finally {
    if (ticker) {
      clearInterval(ticker);
      process.stderr.write('\r\x1b[K');
    }
  }
}
