/**
 * NBD throughput: our server against `nbdkit file` on the same file, each read by
 * the same clients (nbdcopy and our client), and our client against nbdcopy on
 * the same nbdkit export. Every figure is a median of --repeat runs, and every
 * goal is a ratio measured in this one run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { openSync, writeSync, closeSync, mkdtempSync, rmSync, createReadStream } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { NbdClient } from '../../nbd/index.ts';
import { summarize, ratio, type Summary } from '../lib/stats.ts';
import { saveResult, table } from '../lib/report.ts';
import { progress, progressDone } from '../lib/progress.ts';
import { parseSize } from '../../src/util/size.ts';

export const help = `Usage: npm run bench -- nbd [--size 1GiB] [--repeat 5] [--random-ops 40000]
                           [--transport tcp|unix|both] [--json]

Reads one file (random data, warm in the page cache) through our server
('livemig nbd serve') and 'nbdkit file', with nbdcopy and with our client:
  sequential reads, 1 MiB requests, 4 connections (nbdcopy's default)
  random 4 KiB reads, our client, 4 connections x 64 in flight
Goals: our server >= 0.8x nbdkit on sequential reads; our client >= 0.8x
nbdcopy reading the same nbdkit export. Also our server with --content-index
(every block read is hashed and recorded) against itself without: the index's
cost, as a ratio. The warm-up pass fills the index; timed passes re-hash blocks
already recorded (the insert rate is in 'npm run bench -- cindex').`;

const MiB = 1024 * 1024;
const LIVEMIG = new URL('../../bin/livemig.js', import.meta.url).pathname;

interface Server {
  name: string;
  uri: string;
  proc: ChildProcess;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function startOurs(file: string, listen: string, indexDir?: string): Promise<Server> {
  const index = indexDir ? ['--content-index', indexDir] : [];
  const proc = spawn(process.execPath, [LIVEMIG, 'nbd', 'serve', '--read-only', '--export', file, '--listen', listen, '--json', ...index], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = (await once(createInterface({ input: proc.stdout! }), 'line')) as [string];
  return { name: indexDir ? 'livemig-cindex' : 'livemig', uri: JSON.parse(line).listening, proc };
}

async function startNbdkit(file: string, transport: 'tcp' | 'unix', dir: string): Promise<Server> {
  let where: string[];
  let uri: string;
  if (transport === 'tcp') {
    const port = await freePort();
    where = ['-i', '127.0.0.1', '-p', String(port)];
    uri = `nbd://127.0.0.1:${port}/`;
  } else {
    const sock = join(dir, 'nbdkit.sock');
    where = ['-U', sock];
    uri = `nbd+unix:///?socket=${encodeURIComponent(sock)}`;
  }
  const proc = spawn('nbdkit', ['--foreground', '--exit-with-parent', '--readonly', ...where, 'file', file], { stdio: 'inherit' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const c = await NbdClient.connect(uri, { connectTimeoutMs: 1000 });
      await c.close();
      return { name: 'nbdkit', uri, proc };
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`nbdkit did not start: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function timeNbdcopy(uri: string, requestSize: number): Promise<number> {
  const t0 = performance.now();
  const p = spawn('nbdcopy', [`--request-size=${requestSize}`, uri, 'null:'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (d) => (err += d));
  const [code] = await once(p, 'exit');
  if (code !== 0) throw new Error(`nbdcopy ${uri} failed: ${err.trim()}`);
  return performance.now() - t0;
}

/** Sequential read of the whole export through `connections` clients, each with `depth` requests in flight. */
async function timeClientSequential(uri: string, size: number, connections: number, depth: number, request: number): Promise<number> {
  const clients = await Promise.all(Array.from({ length: connections }, () => NbdClient.connect(uri, { maxInflight: depth })));
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    clients.flatMap((c) =>
      Array.from({ length: depth }, async () => {
        const buf = Buffer.allocUnsafe(request);
        while (next < size) {
          const offset = next;
          next += request;
          const n = Math.min(request, size - offset);
          await c.readInto(n === request ? buf : buf.subarray(0, n), offset);
        }
      }),
    ),
  );
  const ms = performance.now() - t0;
  await Promise.all(clients.map((c) => c.close()));
  return ms;
}

async function timeClientRandom(uri: string, size: number, ops: number, connections: number, depth: number): Promise<number> {
  const clients = await Promise.all(Array.from({ length: connections }, () => NbdClient.connect(uri, { maxInflight: depth })));
  const blocks = Math.floor(size / 4096);
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % blocks);
  let issued = 0;
  const t0 = performance.now();
  await Promise.all(
    clients.flatMap((c) =>
      Array.from({ length: depth }, async () => {
        const buf = Buffer.allocUnsafe(4096);
        while (issued < ops) {
          issued++;
          await c.readInto(buf, rand() * 4096);
        }
      }),
    ),
  );
  const ms = performance.now() - t0;
  await Promise.all(clients.map((c) => c.close()));
  return ms;
}

function makeImage(path: string, size: number): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.allocUnsafe(16 * MiB);
  for (let done = 0; done < size; done += chunk.length) {
    const n = Math.min(chunk.length, size - done);
    writeSync(fd, randomFillSync(chunk.subarray(0, n)));
  }
  closeSync(fd);
}

async function warm(path: string): Promise<void> {
  for await (const _ of createReadStream(path, { highWaterMark: 4 * MiB })) void _;
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      size: { type: 'string', default: '1GiB' },
      repeat: { type: 'string', default: '5' },
      'random-ops': { type: 'string', default: '40000' },
      transport: { type: 'string', default: 'both' },
      json: { type: 'boolean' },
    },
  });
  const size = parseSize(values.size!);
  if (!size) throw new Error(`--size: not a size: ${values.size}`);
  const repeat = Number(values.repeat);
  const randomOps = Number(values['random-ops']);
  const transports = values.transport === 'both' ? (['tcp', 'unix'] as const) : ([values.transport] as ('tcp' | 'unix')[]);
  const dir = mkdtempSync(join(tmpdir(), 'livemig-bench-nbd-'));
  const servers: Server[] = [];
  try {
    const file = join(dir, 'disk.img');
    progress(`writing a ${size / MiB} MiB random image`);
    makeImage(file, size);
    await warm(file);

    const runs: Record<string, number[]> = {};
    const record = (key: string, ms: number) => (runs[key] ??= []).push(ms);
    for (const transport of transports) {
      const ours = await startOurs(file, transport === 'tcp' ? `tcp://127.0.0.1:${await freePort()}` : `unix:${join(dir, 'ours.sock')}`);
      const kit = await startNbdkit(file, transport, dir);
      const indexed = await startOurs(file, transport === 'tcp' ? `tcp://127.0.0.1:${await freePort()}` : `unix:${join(dir, 'ours-cindex.sock')}`, join(dir, `cindex-${transport}`));
      servers.push(ours, kit, indexed);
      // One untimed pass each: JIT, buffer pools and nbdkit's threads warm up before anything counts.
      for (const s of [ours, kit, indexed]) {
        progress(`${transport} warm-up: ${s.name}`);
        await timeNbdcopy(s.uri, MiB);
        await timeClientRandom(s.uri, size, randomOps / 4, 4, 64);
      }
      for (let r = 0; r < repeat; r++) {
        // Alternate which server goes first, so drift in machine load hits both alike.
        const order = r % 2 ? [indexed, kit, ours] : [ours, kit, indexed];
        for (const s of order) {
          progress(`${transport} run ${r + 1}/${repeat}: ${s.name}`);
          record(`${transport}/seq/nbdcopy/${s.name}`, await timeNbdcopy(s.uri, MiB));
          record(`${transport}/seq/client/${s.name}`, await timeClientSequential(s.uri, size, 4, 8, MiB));
          record(`${transport}/rand4k/client/${s.name}`, await timeClientRandom(s.uri, size, randomOps, 4, 64));
        }
      }
    }
    progressDone();

    const figures: Record<string, Summary & { mibPerS: number; opsPerS?: number }> = {};
    for (const [key, ms] of Object.entries(runs)) {
      const s = summarize(ms);
      const isRandom = key.includes('rand4k');
      const bytes = isRandom ? randomOps * 4096 : size;
      figures[key] = { ...s, mibPerS: Math.round(bytes / MiB / (s.median / 1000)), ...(isRandom ? { opsPerS: Math.round(randomOps / (s.median / 1000)) } : {}) };
    }
    const thr = (k: string) => figures[k].mibPerS;
    const ratios: Record<string, { value: number; goal?: number; what: string }> = {};
    for (const t of transports) {
      ratios[`${t}: server seq 1MiB (nbdcopy)`] = { value: ratio(thr(`${t}/seq/nbdcopy/livemig`), thr(`${t}/seq/nbdcopy/nbdkit`)), goal: 0.8, what: 'our server / nbdkit, both read by nbdcopy' };
      ratios[`${t}: server seq 1MiB (our client)`] = { value: ratio(thr(`${t}/seq/client/livemig`), thr(`${t}/seq/client/nbdkit`)), goal: 0.8, what: 'our server / nbdkit, both read by our client' };
      ratios[`${t}: server random 4KiB (our client)`] = { value: ratio(thr(`${t}/rand4k/client/livemig`), thr(`${t}/rand4k/client/nbdkit`)), what: 'our server / nbdkit, random 4 KiB reads' };
      for (const [k, what] of [['seq/nbdcopy', 'seq 1MiB (nbdcopy)'], ['seq/client', 'seq 1MiB (our client)'], ['rand4k/client', 'random 4KiB (our client)']]) {
        ratios[`${t}: content index, ${what}`] = { value: ratio(thr(`${t}/${k}/livemig-cindex`), thr(`${t}/${k}/livemig`)), what: 'our server with --content-index / without' };
      }
      ratios[`${t}: client seq 1MiB on nbdkit`] = { value: ratio(thr(`${t}/seq/client/nbdkit`), thr(`${t}/seq/nbdcopy/nbdkit`)), goal: 0.8, what: 'our client / nbdcopy, both reading nbdkit' };
    }
    const command = `npm run bench -- nbd ${args.join(' ')}`.trim();
    const path = saveResult('nbd', command, { parameters: { size, repeat, randomOps, transports }, figures, ratios });
    if (values.json) {
      console.log(JSON.stringify({ figures, ratios, path }));
      return;
    }
    console.log(`\nNBD read throughput, ${size / MiB} MiB file in page cache, median of ${repeat} (MiB/s)\n`);
    console.log(table(['measurement', 'median MiB/s', 'min..max ms'], Object.entries(figures).map(([k, f]) => [k, f.mibPerS, `${f.min.toFixed(0)}..${f.max.toFixed(0)}`])));
    console.log('\nRatios (same run)\n');
    console.log(table(['ratio', 'value', 'goal', 'met'], Object.entries(ratios).map(([k, r]) => [k, r.value.toFixed(2), r.goal ? `>= ${r.goal}` : '-', r.goal ? (r.value >= r.goal ? 'yes' : 'NO') : '-'])));
    console.log(`\nraw figures: ${path}\ncommand: ${command}`);
  } finally {
    for (const s of servers) s.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}
