/**
 * The stock-QEMU baseline the stream proxies will be measured against (not yet a
 * bench scenario): for each warm guest, how its memory splits into zero pages, pages
 * equal to a disk block, and the rest (pmemsave of the stopped guest), and direct
 * QEMU to QEMU migrations over TCP on loopback, throttled and not, each verified.
 *
 *   node --import tsx bench/lib/qemu-baseline.ts [--guest 256MiB:96MiB,1GiB:1152MiB]
 *        [--bandwidth 131072000] [--runs 3] [--loop] [--out DIR]
 *
 * With --loop (a guest reading its disk all along), QEMU 7.2 under TCG itself ends some
 * direct migrations with a few dozen pages different between source and destination
 * (small in-page differences: guest writes whose dirty bit was lost), so `verified`
 * can read NO there with no proxy involved. Idle warm guests verified every time.
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSize, formatBytes } from '../../src/util/size.ts';
import { pmemsave } from '../../src/qemu/migration-control.ts';
import { bootWarmGuest, directMigration, type DirectResult, type WarmGuest } from './qemu-guest.ts';
import { classifyMemory, indexDisk, type ContentMix } from './qemu-content.ts';
import { saveResult, table, RESULTS_DIR } from './report.ts';
import { summarize } from './stats.ts';

interface GuestReport {
  memoryBytes: number;
  diskBytes: number;
  files: number;
  dataBytes: number;
  buildMs: number;
  bootMs: number;
  content: ContentMix & { zeroFraction: number; onDiskFraction: number };
  throttled: DirectResult[];
  unthrottled: DirectResult[];
}

async function measureContent(g: WarmGuest, dir: string): Promise<GuestReport['content']> {
  const mem = join(dir, 'content.mem');
  await g.qemu.qmp.execute('stop');
  await pmemsave(g.qemu.qmp, g.memoryBytes, mem);
  await g.qemu.qmp.execute('cont');
  const mix = await classifyMemory(mem, g.image.disk, await indexDisk(g.image.disk));
  rmSync(mem, { force: true });
  return { ...mix, zeroFraction: mix.zero / mix.pages, onDiskFraction: mix.onDisk / mix.pages };
}

async function measureGuest(memoryBytes: number, diskBytes: number, o: { bandwidth: number; runs: number; loop: boolean }): Promise<GuestReport> {
  const dir = mkdtempSync(join(tmpdir(), 'lm-qb-'));
  const t0 = performance.now();
  const g = await bootWarmGuest(dir, { memoryBytes, diskBytes, loop: o.loop });
  try {
    const buildMs = g.image.buildMs.total;
    process.stderr.write(`guest ${formatBytes(memoryBytes)} (disk ${formatBytes(diskBytes)}): image ${Math.round(buildMs)} ms, boot+warm ${Math.round(g.bootMs)} ms (${Math.round(performance.now() - t0)} ms)\n`);
    const content = await measureContent(g, dir);
    process.stderr.write(`  zero ${(100 * content.zeroFraction).toFixed(1)} %, on disk ${(100 * content.onDiskFraction).toFixed(1)} %\n`);
    const throttled: DirectResult[] = [];
    const unthrottled: DirectResult[] = [];
    for (let i = 0; i < o.runs; i++) {
      throttled.push(await directMigration(g, dir, o.bandwidth));
      unthrottled.push(await directMigration(g, dir, 0));
      process.stderr.write(`  run ${i + 1}: ${JSON.stringify({ throttled: brief(throttled.at(-1)!), unthrottled: brief(unthrottled.at(-1)!) })}\n`);
    }
    return { memoryBytes, diskBytes, files: g.image.files, dataBytes: g.image.dataBytes, buildMs, bootMs: g.bootMs, content, throttled, unthrottled };
  } finally {
    await g.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const brief = (r: DirectResult) => ({ totalMs: r.totalMs, downtimeMs: r.downtimeMs, bytes: r.ramTransferred, identical: r.identical, alive: r.alive });

function rows(reports: GuestReport[]): (string | number)[][] {
  const med = (rs: DirectResult[], f: (r: DirectResult) => number) => summarize(rs.map(f)).median;
  const range = (rs: DirectResult[], f: (r: DirectResult) => number) => `${Math.min(...rs.map(f))}–${Math.max(...rs.map(f))}`;
  return reports.map((r) => [
    `${formatBytes(r.memoryBytes)} / ${formatBytes(r.dataBytes)} files`,
    `${(100 * r.content.onDiskFraction).toFixed(1)} %`, `${(100 * r.content.zeroFraction).toFixed(1)} %`,
    `${(med(r.throttled, (x) => x.totalMs) / 1000).toFixed(2)} s`, range(r.throttled, (x) => x.downtimeMs), formatBytes(med(r.throttled, (x) => x.ramTransferred)),
    `${(med(r.unthrottled, (x) => x.totalMs) / 1000).toFixed(2)} s`, range(r.unthrottled, (x) => x.downtimeMs),
    [...r.throttled, ...r.unthrottled].every((x) => x.identical && x.alive) ? 'yes' : 'NO',
  ]);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { guest: { type: 'string' }, bandwidth: { type: 'string' }, runs: { type: 'string' }, loop: { type: 'boolean' }, out: { type: 'string' } } });
  const guests = (values.guest ?? '256MiB:96MiB,1GiB:1152MiB').split(',').map((g) => g.split(':').map((s) => parseSize(s)!));
  const o = { bandwidth: Number(values.bandwidth ?? 131_072_000), runs: Number(values.runs ?? 3), loop: !!values.loop };
  const reports: GuestReport[] = [];
  for (const [memory, disk] of guests) reports.push(await measureGuest(memory, disk, o));
  console.log(table(['guest / files', 'on disk', 'zero', `direct ${formatBytes(o.bandwidth)}/s`, 'downtime ms', 'ram transferred', 'unthrottled', 'downtime ms', 'verified'], rows(reports)));
  const command = `node --import tsx bench/lib/qemu-baseline.ts ${process.argv.slice(2).join(' ')}`.trim();
  console.log(saveResult('qemu-baseline', command, { options: o, reports }, values.out ?? RESULTS_DIR));
}

await main();
