/**
 * What the I/O interceptor costs: the same guest disk I/O (reads of 1–64 block
 * extents into guest pages, and writes of pages out, 16 at a time) against the
 * same NBD server, once through the interceptor (p2b map kept) and once straight
 * to the backend (same copies into guest memory, no map). Goal: with ≥ 0.9× without.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { mkdtempSync, rmSync, openSync, writeSync, closeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { GuestMemory } from '../../src/guest/memory.ts';
import { PAGE_SIZE } from '../../src/guest/layout.ts';
import { P2bMap } from '../../src/p2b/map.ts';
import { Interceptor } from '../../src/storage/interceptor.ts';
import { NbdBackend } from '../../src/storage/nbd-backend.ts';
import type { BlockBackend } from '../../src/storage/backend.ts';
import { Rng } from '../../src/util/rng.ts';
import { summarize, ratio } from '../lib/stats.ts';
import { saveResult, table } from '../lib/report.ts';
import { progress, progressDone } from '../lib/progress.ts';

export const help = `Usage: npm run bench -- interceptor [--ops 6000] [--repeat 9] [--json]

Guest disk I/O through the interceptor vs straight to the backend, same server
('livemig nbd serve', 512 MiB file), same operation sequence, alternating runs.
Goal: the interceptor keeps >= 0.9x of the throughput.`;

const MiB = 1024 * 1024;
const LIVEMIG = new URL('../../bin/livemig.js', import.meta.url).pathname;

interface Op {
  write: boolean;
  first: number;
  pages: number[];
}

/** A fixed sequence of guest I/O: 80 % reads, 20 % writes, extents of 1–64 blocks. */
function makeOps(count: number, diskBlocks: number, memPages: number): Op[] {
  const rng = new Rng(99);
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const n = 1 + Math.floor(rng.float() ** 2 * 64);
    const first = rng.int(diskBlocks - n);
    const base = rng.int(memPages - n);
    ops.push({ write: rng.float() < 0.2, first, pages: Array.from({ length: n }, (_, k) => base + k) });
  }
  return ops;
}

/** The same I/O without the interceptor: the data still lands in (and leaves from) guest memory. */
class Direct {
  constructor(readonly backend: BlockBackend, readonly memory: GuestMemory) {}
  async readPages(pages: number[], first: number): Promise<void> {
    const buf = Buffer.allocUnsafe(pages.length * PAGE_SIZE);
    await this.backend.readInto(buf, first * PAGE_SIZE);
    pages.forEach((p, i) => this.memory.setPage(p, buf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)));
  }
  async writePages(pages: number[], first: number): Promise<void> {
    const buf = Buffer.allocUnsafe(pages.length * PAGE_SIZE);
    pages.forEach((p, i) => buf.set(this.memory.page(p), i * PAGE_SIZE));
    await this.backend.write(buf, first * PAGE_SIZE);
  }
  async flush(): Promise<void> {
    await this.backend.flush();
  }
}

async function runOps(io: Direct | Interceptor, ops: Op[], depth: number): Promise<{ ms: number; cpuMs: number; bytes: number }> {
  let next = 0;
  let bytes = 0;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: depth }, async () => {
      while (next < ops.length) {
        const op = ops[next++];
        // Disjoint page ranges per in-flight op are not guaranteed; both variants see the same overlaps.
        if (op.write) await io.writePages(op.pages, op.first);
        else await io.readPages(op.pages, op.first);
        bytes += op.pages.length * PAGE_SIZE;
      }
    }),
  );
  await io.flush();
  const c = process.cpuUsage(c0);
  return { ms: performance.now() - t0, cpuMs: (c.user + c.system) / 1000, bytes };
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { ops: { type: 'string', default: '6000' }, repeat: { type: 'string', default: '9' }, json: { type: 'boolean' } } });
  const opsCount = Number(values.ops);
  const repeat = Number(values.repeat);
  const dir = mkdtempSync(join(tmpdir(), 'livemig-bench-icpt-'));
  const diskBytes = 512 * MiB;
  const file = join(dir, 'disk.img');
  const fd = openSync(file, 'w');
  const chunk = Buffer.allocUnsafe(16 * MiB);
  for (let i = 0; i < diskBytes / chunk.length; i++) writeSync(fd, randomFillSync(chunk));
  closeSync(fd);
  const server = spawn(process.execPath, [LIVEMIG, 'nbd', 'serve', '--export', file, '--listen', `unix:${join(dir, 'nbd.sock')}`, '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const [line] = (await once(createInterface({ input: server.stdout! }), 'line')) as [string];
    const uri = JSON.parse(line).listening as string;
    // Separate guest memories: the interceptor hooks the memory it watches, the direct path must not pay for that.
    const memory = GuestMemory.allocate(256 * MiB);
    const directMemory = GuestMemory.allocate(256 * MiB);
    const map = P2bMap.allocate(memory.pages);
    const backend = await NbdBackend.open(uri);
    const direct = new Direct(backend, directMemory);
    const intercepted = new Interceptor(backend, memory, map);
    const ops = makeOps(opsCount, diskBytes / PAGE_SIZE, memory.pages);
    const runs = { direct: [] as number[], interceptor: [] as number[] };
    const cpu = { direct: [] as number[], interceptor: [] as number[] };
    let bytes = 0;
    progress('warm-up');
    await runOps(direct, ops.slice(0, 500), 16);
    await runOps(intercepted, ops.slice(0, 500), 16);
    for (let r = 0; r < repeat; r++) {
      for (const which of r % 2 ? (['interceptor', 'direct'] as const) : (['direct', 'interceptor'] as const)) {
        progress(`run ${r + 1}/${repeat}: ${which}`);
        const res = await runOps(which === 'direct' ? direct : intercepted, ops, 16);
        runs[which].push(res.ms);
        cpu[which].push(res.cpuMs);
        bytes = res.bytes;
      }
    }
    progressDone();
    await backend.close();
    const d = summarize(runs.direct);
    const i = summarize(runs.interceptor);
    const mibs = (ms: number) => Math.round(bytes / MiB / (ms / 1000));
    const value = ratio(d.median, i.median); // throughput ratio = inverse time ratio
    const cd = summarize(cpu.direct);
    const ci = summarize(cpu.interceptor);
    const cpuPerMiB = (ms: number) => Math.round((ms / (bytes / MiB)) * 1000) / 1000;
    const figures = {
      direct: { ...d, mibPerS: mibs(d.median), cpuMsPerMiB: cpuPerMiB(cd.median) },
      interceptor: { ...i, mibPerS: mibs(i.median), cpuMsPerMiB: cpuPerMiB(ci.median) },
    };
    const cpuRatio = ratio(cd.median, ci.median);
    const ratios = {
      'interceptor / direct throughput': { value, goal: 0.9, what: 'guest disk I/O with the interceptor vs without, same server, same ops' },
      'direct / interceptor CPU per byte': { value: cpuRatio, what: 'the same, by CPU time of this process (less sensitive to machine load)' },
    };
    const command = `npm run bench -- interceptor ${args.join(' ')}`.trim();
    const path = saveResult('interceptor', command, { parameters: { ops: opsCount, repeat, bytesPerRun: bytes, mapEntries: map.pages }, figures, ratios });
    if (values.json) return void console.log(JSON.stringify({ figures, ratios, path }));
    console.log(`\nGuest disk I/O, ${opsCount} ops (${(bytes / MiB).toFixed(0)} MiB), 16 in flight, median of ${repeat}\n`);
    console.log(table(['variant', 'MiB/s', 'min..max ms', 'CPU ms per MiB'], [
      ['straight to the backend', figures.direct.mibPerS, `${d.min.toFixed(0)}..${d.max.toFixed(0)}`, figures.direct.cpuMsPerMiB],
      ['through the interceptor', figures.interceptor.mibPerS, `${i.min.toFixed(0)}..${i.max.toFixed(0)}`, figures.interceptor.cpuMsPerMiB],
    ]));
    console.log(`\n${table(['ratio', 'value', 'goal', 'met'], [
      ['interceptor / direct throughput', value.toFixed(2), '>= 0.9', value >= 0.9 ? 'yes' : 'NO'],
      ['direct / interceptor CPU per byte', cpuRatio.toFixed(2), '-', '-'],
    ])}`);
    console.log(`\nraw figures: ${path}\ncommand: ${command}`);
  } finally {
    server.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}
