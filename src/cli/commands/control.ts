/** `livemig status|pause|resume|stop|throttle|dump-memory --control SOCKET`: talk to a running guest. */
import { resolve } from 'node:path';
import { controlRequest } from '../../guest/control/client.ts';
import type { GuestStatus } from '../../guest/guest.ts';
import { parse } from '../parse.ts';
import { UsageError } from '../usage-error.ts';
import { formatBytes } from '../../util/size.ts';
import { createHash } from 'node:crypto';
import type { Fingerprint } from '../../guest/fingerprint.ts';

const USAGE: Record<string, string> = {
  status: 'livemig status --control SOCKET [--json]',
  pause: 'livemig pause --control SOCKET [--json]',
  resume: 'livemig resume --control SOCKET [--json]',
  stop: 'livemig stop --control SOCKET [--json]',
  throttle: 'livemig throttle --control SOCKET PERCENT [--json]',
  fingerprint: 'livemig fingerprint --control SOCKET [--json]\n\nPrints a SHA-256 of every MiB of guest memory, computed anew from the bytes\n(it shares nothing with the migration engine). A guest that runs is refused:\npause it first. Two hosts agree on memory when their fingerprints are equal.',
  'dump-memory': 'livemig dump-memory --control SOCKET --out PATH [--json]\n\nWrites guest memory to PATH and the p2b map of the same instant to PATH.p2b.sqlite,\nso that `p2b verify PATH.p2b.sqlite --memory PATH --storage DISK` checks it.\nA guest that writes its disk changes blocks after the dump: pause it first and\nkeep it paused until the check is done (dump-memory leaves a paused guest paused).',
};

export function helpFor(verb: string): string {
  return `Usage: ${USAGE[verb]}`;
}

export function formatStatus(s: GuestStatus): string {
  const pct = (n: number) => `${((100 * n) / s.p2b.pages).toFixed(1)} %`;
  const lines = [
    `guest ${s.name}: ${s.state}${s.throttle ? ` (throttled ${s.throttle} %)` : ''}`,
    `  memory: ${formatBytes(s.memoryBytes)} in ${s.regions} region${s.regions > 1 ? 's' : ''}, ${s.dirtyPages} pages dirty since last read`,
    `  workload: ${s.workload}, ${s.steps} steps, ${Object.entries(s.progress).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `  disk: ${s.disk.description}: read ${formatBytes(s.disk.bytesRead)} in ${s.disk.reads} ops, wrote ${formatBytes(s.disk.bytesWritten)} in ${s.disk.writes} ops, ${s.disk.flushes} flushes`,
    `  p2b: ${s.p2b.mappedPages} of ${s.p2b.pages} pages mapped (${pct(s.p2b.mappedPages)}), ${s.p2b.referenceablePages} referenceable (${pct(s.p2b.referenceablePages)})`,
    `       ${s.p2b.path}`,
  ];
  if (s.p2b.reloadedUnverified) lines.push(`       ${s.p2b.reloadedUnverified} entries reloaded as unverified${s.p2b.previousRunCrashed ? ' (the previous run did not stop cleanly)' : ''}`);
  if (s.error) lines.push(`  error: ${s.error.message} [${s.error.code}]`);
  return lines.join('\n');
}

export function verb(name: 'status' | 'pause' | 'resume' | 'stop' | 'throttle' | 'dump-memory' | 'fingerprint') {
  return async (args: string[]): Promise<number> => {
    const { values, positionals } = parse(args, { control: { type: 'string' }, out: { type: 'string' } }, name === 'throttle');
    if (values.help) return void console.log(helpFor(name)), 0;
    if (!values.control) throw new UsageError(`${name} needs --control SOCKET`);
    const socket = resolve(values.control);
    let result: unknown;
    if (name === 'throttle') {
      const percent = Number(positionals[0]);
      if (positionals.length !== 1 || !Number.isInteger(percent) || percent < 0 || percent > 99) throw new UsageError('throttle needs PERCENT, an integer from 0 to 99');
      result = await controlRequest(socket, 'throttle', { percent });
    } else if (name === 'dump-memory') {
      if (!values.out) throw new UsageError('dump-memory needs --out PATH');
      result = await controlRequest(socket, 'dump-memory', { path: resolve(values.out) });
    } else result = await controlRequest(socket, name);
    if (values.json) console.log(JSON.stringify(result));
    else if (name === 'dump-memory') {
      const r = result as { path: string; bytes: number; map: string };
      console.log(`wrote ${formatBytes(r.bytes)} of guest memory to ${r.path}\nand the p2b map at the same instant to ${r.map}`);
    } else if (name === 'stop') console.log('stopped');
    else if (name === 'fingerprint') {
      const f = result as Fingerprint;
      const whole = createHash('sha256').update(f.chunks.join('')).digest('hex');
      console.log(`${whole}  SHA-256 over ${f.chunks.length} per-MiB hashes of ${formatBytes(f.memoryBytes)} (${f.ms} ms)`);
    } else console.log(formatStatus(result as GuestStatus));
    return 0;
  };
}
