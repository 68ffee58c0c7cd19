/**
 * NBD servers and clients against their references, in one run: our server
 * against `nbdkit file` on the same file (read by nbdcopy, our client and fio's
 * libnbd engine), and our client against nbdcopy on the same nbdkit export.
 * Every figure is a median of --repeat runs, and every goal is a ratio measured
 * in this one run, the servers taking turns.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { openSync, writeSync, closeSync, fdatasyncSync, mkdtempSync, rmSync, createReadStream, readFileSync } from 'node:fs';
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
import { runFio } from '../lib/fio.ts';
import { parseSize } from '../../src/util/size.ts';

export const help = `Usage: npm run bench -- nbd [--size 1GiB] [--repeat 5] [--random-ops 40000]
                           [--transport tcp|unix|both] [--fio-seconds 3]
                           [--tests seq,rand,qd1,load,big] [--ours BIN] [--json]

One file (random data, warm in the page cache) served read-write by our server
('livemig nbd serve') and by 'nbdkit file', the two taking turns:
  seq   sequential reads, 1 MiB requests, 4 connections: nbdcopy and our client
  rand  random 4 KiB reads, our client, 4 connections x 64 in flight
  qd1   random 4 KiB reads, and writes, one request in flight (fio, nbd engine)
  load  random 4 KiB, 70 % reads / 30 % writes, 8 clients x 32 in flight (fio),
        with each server's CPU time per request
  big   one 50 MB write and read back through our client, compared
Goals (ratios in the same run): our server >= 0.8x nbdkit on sequential reads,
QD1 reads and writes, and under load; our client >= 0.8x nbdcopy reading the
same nbdkit export; the 50 MB request round-trips on both servers.
--ours BIN serves 'livemig' from another checkout's bin/livemig.js (before/after).`;

const MiB = 1024 * 1024;
const LIVEMIG = new URL('../../bin/livemig.js', import.meta.url).pathname;

interface Server {
  name: string;
  uri: string;
  proc: ChildProcess;
  /** The processes doing the serving (our server's workers too), for their CPU time. */
  pids: number[];
}

/** CPU time (user + system, all threads, exited ones included) of processes, in ms. */
function cpuMs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks * 10; // USER_HZ is 100 on Linux
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function startOurs(file: string, listen: string, bin = LIVEMIG): Promise<Server> {
  const proc = spawn(process.execPath, [bin, 'nbd', 'serve', '--export', file, '--listen', listen, '--json'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(proc, 'exit').then(([code]) => {
    throw new Error(`livemig nbd serve exited (code ${code}) before listening`);
  });
  const [line] = (await Promise.race([once(createInterface({ input: proc.stdout! }), 'line'), exited])) as [string];
  const info = JSON.parse(line) as { listening: string; pids?: number[] };
  return { name: 'livemig', uri: info.listening, proc, pids: info.pids ?? [proc.pid!] };
}

/** Stops servers and waits until they are gone (the file's lock goes with ours). */
async function stopServers(servers: Server[]): Promise<void> {
  await Promise.all(servers.splice(0).map(async (s) => {
    if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
    const gone = once(s.proc, 'exit');
    s.proc.kill('SIGTERM');
    await gone;
  }));
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
  const proc = spawn('nbdkit', ['--foreground', '--exit-with-parent', ...where, 'file', file], { stdio: 'inherit' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const c = await NbdClient.connect(uri, { connectTimeoutMs: 1000 });
      await c.close();
      return { name: 'nbdkit', uri, proc, pids: [proc.pid!] };
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

/** One 50 MB write and read back through our client: ms for both, and whether the bytes came back. */
async function timeBigRoundTrip(uri: string, size: number): Promise<{ ms: number; ok: boolean }> {
  const length = 50 * 1000 * 1000;
  const data = randomFillSync(Buffer.allocUnsafe(length));
  const offset = Math.floor((size - length) / 2 / 4096) * 4096;
  const client = await NbdClient.connect(uri);
  try {
    const t0 = performance.now();
    await client.write(offset, data);
    const back = await client.read(offset, length);
    const ms = performance.now() - t0;
    return { ms, ok: back.equals(data) };
  } finally {
    await client.close();
  }
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

/** Writes back what earlier runs dirtied and reads the whole file into the page cache. */
async function warm(path: string): Promise<void> {
  const fd = openSync(path, 'r');
  try {
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  for await (const _ of createReadStream(path, { highWaterMark: 4 * MiB })) void _;
}

const TESTS = ['seq', 'rand', 'qd1', 'load', 'big'] as const;
type TestName = (typeof TESTS)[number];

interface Plan {
  size: number;
  repeat: number;
  randomOps: number;
  fioSeconds: number;
  tests: Set<TestName>;
  oursBin?: string;
}

/** Raw measurements, keyed transport/test/client/server: ms for timed runs, IOPS for fio. */
interface Runs {
  ms: Record<string, number[]>;
  iops: Record<string, number[]>;
  /** Server CPU time per request under load, in µs. */
  cpuUsPerIo: Record<string, number[]>;
  roundTrips: Record<string, boolean[]>;
}

/** One measurement of every chosen test against one server. */
/** One measurement of one test against one server. */
async function measureTest(test: TestName, s: Server, transport: string, plan: Plan, runs: Runs): Promise<void> {
  const key = (k: string) => `${transport}/${k}/${s.name}`;
  const ms = (k: string, v: number) => (runs.ms[key(k)] ??= []).push(v);
  const iops = (k: string, v: number) => (runs.iops[key(k)] ??= []).push(Math.round(v));
  const fio = { blockSize: 4096, size: plan.size, seconds: plan.fioSeconds };
  switch (test) {
    case 'seq':
      ms('seq/nbdcopy', await timeNbdcopy(s.uri, MiB));
      ms('seq/client', await timeClientSequential(s.uri, plan.size, 4, 8, MiB));
      return;
    case 'rand':
      ms('rand4k/client', await timeClientRandom(s.uri, plan.size, plan.randomOps, 4, 64));
      return;
    case 'qd1':
      iops('qd1-read/fio', (await runFio(s.uri, { ...fio, rw: 'randread', jobs: 1, iodepth: 1 })).readIops);
      iops('qd1-write/fio', (await runFio(s.uri, { ...fio, rw: 'randwrite', jobs: 1, iodepth: 1 })).writeIops);
      return;
    case 'load': {
      const seconds = plan.fioSeconds + 2;
      const cpu0 = cpuMs(s.pids);
      const r = await runFio(s.uri, { ...fio, seconds, rw: 'randrw', readPercent: 70, jobs: 8, iodepth: 32 });
      iops('load-read/fio', r.readIops);
      iops('load-write/fio', r.writeIops);
      iops('load-total/fio', r.readIops + r.writeIops);
      // Server CPU per request: what the server costs the machine, apart from how the scheduler shares it.
      (runs.cpuUsPerIo[key('load-total/fio')] ??= []).push(((cpuMs(s.pids) - cpu0) * 1000) / ((r.readIops + r.writeIops) * seconds));
      return;
    }
    case 'big': {
      const r = await timeBigRoundTrip(s.uri, plan.size);
      ms('big50MB/client', r.ms);
      (runs.roundTrips[key('big50MB/client')] ??= []).push(r.ok);
    }
  }
}

/**
 * Starts both servers on one transport, warms them, and measures them test by
 * test, back to back: a pair of runs seconds apart sees the same machine load.
 */
async function measureTransport(transport: 'tcp' | 'unix', file: string, dir: string, plan: Plan, runs: Runs, servers: Server[]): Promise<void> {
  const ours = await startOurs(file, transport === 'tcp' ? `tcp://127.0.0.1:${await freePort()}` : `unix:${join(dir, 'ours.sock')}`, plan.oursBin);
  const kit = await startNbdkit(file, transport, dir);
  servers.push(ours, kit);
  // One untimed pass each: JIT, buffer pools and nbdkit's threads warm up before anything counts.
  for (const s of [ours, kit]) {
    progress(`${transport} warm-up: ${s.name}`);
    await timeNbdcopy(s.uri, MiB);
    await timeClientRandom(s.uri, plan.size, plan.randomOps / 4, 4, 64);
  }
  for (let r = 0; r < plan.repeat; r++) {
    for (const test of TESTS.filter((t) => plan.tests.has(t))) {
      // Reclaim (kswapd, DAMON) drops pages idle for a while: each pair starts from a warm file.
      await warm(file);
      // Alternate which server goes first, so drift in machine load hits both alike.
      for (const s of r % 2 ? [kit, ours] : [ours, kit]) {
        progress(`${transport} run ${r + 1}/${plan.repeat} ${test}: ${s.name}`);
        await measureTest(test, s, transport, plan, runs);
      }
    }
  }
}

function figuresOf(runs: Runs, plan: Plan) {
  const figures: Record<string, Summary & { mibPerS?: number; opsPerS?: number; iops?: number; cpuUsPerIo?: number; roundTrip?: boolean }> = {};
  for (const [key, ms] of Object.entries(runs.ms)) {
    const s = summarize(ms);
    const bytes = key.includes('rand4k') ? plan.randomOps * 4096 : key.includes('big50MB') ? 2 * 50e6 : plan.size;
    figures[key] = { ...s, mibPerS: Math.round(bytes / MiB / (s.median / 1000)) };
    if (key.includes('rand4k')) figures[key].opsPerS = Math.round(plan.randomOps / (s.median / 1000));
    if (runs.roundTrips[key]) figures[key].roundTrip = runs.roundTrips[key].every(Boolean);
  }
  for (const [key, iops] of Object.entries(runs.iops)) figures[key] = { ...summarize(iops), iops: summarize(iops).median };
  for (const [key, us] of Object.entries(runs.cpuUsPerIo)) figures[key].cpuUsPerIo = Math.round(summarize(us).median * 10) / 10;
  return figures;
}

type Ratio = { value: number; goal?: number; what: string; perRun: number[] };

/**
 * Each ratio is the median of per-run ratios: run r of one side against run r of
 * the other, measured back to back, so drift in the machine's load cancels out.
 */
function ratiosOf(figures: ReturnType<typeof figuresOf>, transports: readonly string[]): Record<string, Ratio> {
  const ratios: Record<string, Ratio> = {};
  const add = (name: string, a: string, b: string, what: string, field: 'mibPerS' | 'iops', goal?: number) => {
    if (!figures[a] || !figures[b]) return;
    // Timed runs are in ms (lower is better); fio runs are in IOPS (higher is better).
    const perRun = figures[a].runs.map((x, i) => ratio(field === 'iops' ? x : figures[b].runs[i], field === 'iops' ? figures[b].runs[i] : x));
    ratios[name] = { value: summarize(perRun).median, goal, what, perRun };
  };
  for (const t of transports) {
    add(`${t}: server seq 1MiB (nbdcopy)`, `${t}/seq/nbdcopy/livemig`, `${t}/seq/nbdcopy/nbdkit`, 'our server / nbdkit, both read by nbdcopy', 'mibPerS', 0.8);
    add(`${t}: server seq 1MiB (our client)`, `${t}/seq/client/livemig`, `${t}/seq/client/nbdkit`, 'our server / nbdkit, both read by our client', 'mibPerS', 0.8);
    add(`${t}: server random 4KiB (our client)`, `${t}/rand4k/client/livemig`, `${t}/rand4k/client/nbdkit`, 'our server / nbdkit, random 4 KiB reads, 4 x 64 in flight', 'mibPerS');
    add(`${t}: server QD1 4KiB read (fio)`, `${t}/qd1-read/fio/livemig`, `${t}/qd1-read/fio/nbdkit`, 'our server / nbdkit, IOPS, one request in flight', 'iops', 0.8);
    add(`${t}: server QD1 4KiB write (fio)`, `${t}/qd1-write/fio/livemig`, `${t}/qd1-write/fio/nbdkit`, 'our server / nbdkit, IOPS, one request in flight', 'iops', 0.8);
    add(`${t}: server 70/30 4KiB 8x32 (fio)`, `${t}/load-total/fio/livemig`, `${t}/load-total/fio/nbdkit`, 'our server / nbdkit, IOPS, 8 clients x 32 in flight', 'iops', 0.8);
    add(`${t}: server 50MB write+read (our client)`, `${t}/big50MB/client/livemig`, `${t}/big50MB/client/nbdkit`, 'our server / nbdkit, one 50 MB write and read', 'mibPerS');
    add(`${t}: client seq 1MiB on nbdkit`, `${t}/seq/client/nbdkit`, `${t}/seq/nbdcopy/nbdkit`, 'our client / nbdcopy, both reading nbdkit', 'mibPerS', 0.8);
  }
  return ratios;
}

function parsePlan(args: string[]): Plan & { transports: ('tcp' | 'unix')[]; json: boolean } {
  const { values } = parseArgs({
    args,
    options: {
      size: { type: 'string', default: '1GiB' },
      repeat: { type: 'string', default: '5' },
      'random-ops': { type: 'string', default: '40000' },
      transport: { type: 'string', default: 'both' },
      'fio-seconds': { type: 'string', default: '3' },
      tests: { type: 'string', default: TESTS.join(',') },
      ours: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const size = parseSize(values.size!);
  if (!size) throw new Error(`--size: not a size: ${values.size}`);
  const tests = values.tests!.split(',') as TestName[];
  const unknown = tests.filter((t) => !TESTS.includes(t));
  if (unknown.length) throw new Error(`--tests: unknown ${unknown.join(', ')} (have: ${TESTS.join(', ')})`);
  if (!['tcp', 'unix', 'both'].includes(values.transport!)) throw new Error(`--transport: expected tcp, unix or both`);
  return {
    size,
    repeat: Number(values.repeat),
    randomOps: Number(values['random-ops']),
    fioSeconds: Number(values['fio-seconds']),
    tests: new Set(tests),
    oursBin: values.ours,
    transports: values.transport === 'both' ? ['tcp', 'unix'] : [values.transport as 'tcp' | 'unix'],
    json: values.json ?? false,
  };
}

export async function run(args: string[]): Promise<void> {
  const plan = parsePlan(args);
  const dir = mkdtempSync(join(tmpdir(), 'livemig-bench-nbd-'));
  const servers: Server[] = [];
  try {
    const file = join(dir, 'disk.img');
    progress(`writing a ${plan.size / MiB} MiB random image`);
    makeImage(file, plan.size);
    await warm(file);
    const runs: Runs = { ms: {}, iops: {}, cpuUsPerIo: {}, roundTrips: {} };
    for (const transport of plan.transports) {
      await measureTransport(transport, file, dir, plan, runs, servers);
      await stopServers(servers);
    }
    progressDone();

    const figures = figuresOf(runs, plan);
    const ratios = ratiosOf(figures, plan.transports);
    const failedRoundTrips = Object.entries(figures).filter(([, f]) => f.roundTrip === false).map(([k]) => k);
    const command = `npm run bench -- nbd ${args.join(' ')}`.trim();
    const parameters = { size: plan.size, repeat: plan.repeat, randomOps: plan.randomOps, fioSeconds: plan.fioSeconds, tests: [...plan.tests], transports: plan.transports };
    const path = saveResult('nbd', command, { parameters, figures, ratios });
    if (plan.json) console.log(JSON.stringify({ figures, ratios, path }));
    else printReport(figures, ratios, plan, path, command);
    if (failedRoundTrips.length) throw new Error(`50 MB round trip returned other bytes: ${failedRoundTrips.join(', ')}`);
  } finally {
    await stopServers(servers);
    rmSync(dir, { recursive: true, force: true });
  }
}

function printReport(figures: ReturnType<typeof figuresOf>, ratios: Record<string, Ratio>, plan: Plan, path: string, command: string): void {
  console.log(`\nNBD, ${plan.size / MiB} MiB file in page cache, median of ${plan.repeat}\n`);
  const value = (f: (typeof figures)[string]) =>
    f.iops !== undefined ? `${f.iops} IOPS${f.cpuUsPerIo !== undefined ? `, server ${f.cpuUsPerIo} µs CPU/IO` : ''}` : `${f.mibPerS} MiB/s`;
  console.log(table(['measurement', 'median', 'min..max (ms or IOPS)'], Object.entries(figures).map(([k, f]) => [k, value(f), `${f.min.toFixed(0)}..${f.max.toFixed(0)}`])));
  console.log('\nRatios (same run)\n');
  console.log(table(['ratio', 'value', 'goal', 'met'], Object.entries(ratios).map(([k, r]) => [k, r.value.toFixed(2), r.goal ? `>= ${r.goal}` : '-', r.goal ? (r.value >= r.goal ? 'yes' : 'NO') : '-'])));
  console.log(`\nraw figures: ${path}\ncommand: ${command}`);
}
