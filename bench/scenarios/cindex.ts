/**
 * The content index's own speeds, each against a reference measured in the same
 * run: the fast hash per 4 KiB block against node:crypto's SHA-1 and MD5; table
 * inserts and lookups; rows persisted to SQLite; and batch lookups of 4096 hashes
 * through the query socket (a `livemig nbd serve --content-index` process) over
 * loopback TCP and a Unix socket, against the same lookups in process.
 * The index's cost on the server's read throughput is in `npm run bench -- nbd --index`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { NbdClient } from '../../nbd/index.ts';
import { BlockHasher, BLOCK_SIZE } from '../../src/storage/content-index/fast-hash.ts';
import { ContentTable } from '../../src/storage/content-index/content-table.ts';
import { DEFAULT_CAPACITY } from '../../src/storage/content-index/content-index.ts';
import { ContentIndexStore } from '../../src/storage/content-index/store.ts';
import { ContentIndexClient } from '../../src/storage/content-index/client.ts';
import { summarize, ratio } from '../lib/stats.ts';
import { saveResult, table } from '../lib/report.ts';
import { progress, progressDone } from '../lib/progress.ts';

export const help = `Usage: npm run bench -- cindex [--entries 4194304] [--disk BLOCKS] [--repeat 5] [--json]

Hash: ns per 4 KiB block, XXH64 (the index's) vs node:crypto SHA-1 and MD5.
Table: inserts/s and lookups/s on a table of --entries (default capacity),
memory per entry. SQLite: rows/s persisted. Query: lookups/s in batches of
4096 through 'livemig nbd serve --content-index --content-index-listen' over
TCP and Unix loopback (--disk blocks indexed, default 65536 = 256 MiB; half
the asked hashes hit).`;

const LIVEMIG = new URL('../../bin/livemig.js', import.meta.url).pathname;
const BATCH = 4096;

function timeIt(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

function hashFigures(repeat: number) {
  const blocks = randomFillSync(Buffer.alloc(1024 * BLOCK_SIZE));
  const n = 100_000;
  const at = (i: number) => blocks.subarray((i & 1023) * BLOCK_SIZE, ((i & 1023) + 1) * BLOCK_SIZE);
  const hasher = new BlockHasher();
  const candidates: Record<string, (b: Buffer) => unknown> = {
    'xxh64 (@node-rs/xxhash)': (b) => hasher.hash(b),
    'sha1 (node:crypto)': (b) => createHash('sha1').update(b).digest(),
    'md5 (node:crypto)': (b) => createHash('md5').update(b).digest(),
  };
  const ns: Record<string, number[]> = {};
  for (let r = 0; r <= repeat; r++) {
    for (const [name, f] of Object.entries(candidates)) {
      const ms = timeIt(() => {
        for (let i = 0; i < n; i++) f(at(i));
      });
      if (r > 0) (ns[name] ??= []).push((ms * 1e6) / n); // round 0 warms up
    }
  }
  return Object.fromEntries(Object.entries(ns).map(([k, v]) => [k, Math.round(summarize(v).median)]));
}

function tableFigures(entries: number, repeat: number, dir: string) {
  const hashes = new Uint32Array(2 * entries);
  randomFillSync(hashes);
  const inserts: number[] = [];
  const lookups: number[] = [];
  const misses: number[] = [];
  const drops: number[] = [];
  let t = new ContentTable(entries);
  for (let r = 0; r < repeat; r++) {
    t = new ContentTable(entries);
    const tt = t;
    inserts.push(entries / timeIt(() => { for (let i = 0; i < entries; i++) tt.record(i, hashes[2 * i], hashes[2 * i + 1], false); }) * 1000);
    lookups.push(entries / timeIt(() => { for (let i = 0; i < entries; i++) tt.lookup(hashes[2 * i], hashes[2 * i + 1]); }) * 1000);
    misses.push(entries / timeIt(() => { for (let i = 0; i < entries; i++) tt.lookup(hashes[2 * i + 1], hashes[2 * i]); }) * 1000);
    if (r < repeat - 1) drops.push(entries / timeIt(() => { for (let i = 0; i < entries; i++) tt.dropBlock(i); }) * 1000);
  }
  // Persisting the last table's entries, every one changed.
  const rowsPerS: number[] = [];
  for (let r = 0; r < Math.min(repeat, 2); r++) {
    const { store } = ContentIndexStore.open(join(dir, `persist-${r}.cindex.sqlite`));
    for (let w = 0; w < t.changed.length; w++) t.changed[w] = -1;
    rowsPerS.push(entries / timeIt(() => store.writeChanges(t)) * 1000);
    store.close();
  }
  const med = (v: number[]) => Math.round(summarize(v).median);
  return {
    entries,
    insertsPerS: med(inserts), lookupHitsPerS: med(lookups), lookupMissesPerS: med(misses), dropsPerS: med(drops),
    bytesPerEntry: Math.round((t.bytes / entries) * 10) / 10, tableMiB: Math.round(t.bytes / 2 ** 20),
    sqliteRowsPerS: med(rowsPerS),
  };
}

async function startIndexedServer(image: string, dir: string, listen: string): Promise<{ proc: ChildProcess; uri: string; query: string }> {
  const proc = spawn(process.execPath, [LIVEMIG, 'nbd', 'serve', '--read-only', '--export', `d=${image}`, '--listen', 'tcp://127.0.0.1:0', '--json',
    '--content-index', join(dir, 'idx'), '--content-index-listen', listen], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(createInterface({ input: proc.stdout! }), 'line')) as [string];
  const info = JSON.parse(line);
  return { proc, uri: info.exports[0].uri, query: info.contentIndexListening };
}

async function queryFigures(blocks: number, repeat: number, dir: string) {
  const image = join(dir, 'disk.img');
  const content = randomFillSync(Buffer.alloc(blocks * BLOCK_SIZE));
  writeFileSync(image, content);
  const out: Record<string, number> = {};
  for (const transport of ['tcp', 'unix'] as const) {
    const listen = transport === 'tcp' ? 'tcp://127.0.0.1:0' : `unix:${join(dir, 'q.sock')}`;
    const srv = await startIndexedServer(image, join(dir, transport), listen);
    try {
      const nbd = await NbdClient.connect(srv.uri);
      await nbd.read(0, Math.min(blocks * BLOCK_SIZE, 32 * 2 ** 20)); // fill the index (first 32 MiB at most per request)
      for (let off = 32 * 2 ** 20; off < blocks * BLOCK_SIZE; off += 32 * 2 ** 20) await nbd.read(off, Math.min(32 * 2 ** 20, blocks * BLOCK_SIZE - off));
      await nbd.close();
      const client = await ContentIndexClient.connect(srv.query, 'd');
      const pairs = client.hashPages(content);
      // The reference: the same lookups on a table like the server's (default capacity, same entries), in process.
      const local = new ContentTable(DEFAULT_CAPACITY);
      for (let b = 0; b < blocks; b++) local.record(b, pairs[2 * b], pairs[2 * b + 1], false);
      // Half hits, half misses: each batch takes 2048 indexed hashes and 2048 swapped ones.
      const batch = new Uint32Array(2 * BATCH);
      const batches = Math.floor(blocks / (BATCH / 2));
      const fill = (k: number) => {
        for (let i = 0; i < BATCH / 2; i++) {
          const src = 2 * (k * (BATCH / 2) + i);
          batch[4 * i] = pairs[src]; batch[4 * i + 1] = pairs[src + 1];
          batch[4 * i + 2] = pairs[src + 1]; batch[4 * i + 3] = pairs[src];
        }
      };
      const rates: number[] = [];
      const localRates: number[] = [];
      for (let r = 0; r <= repeat; r++) {
        let t0 = performance.now();
        for (let k = 0; k < batches; k++) {
          fill(k);
          const got = await client.lookup(batch);
          if (got[0] !== k * (BATCH / 2) || got[1] !== -1) throw new Error('query bench: wrong answer');
        }
        if (r > 0) rates.push((batches * BATCH) / (performance.now() - t0) * 1000);
        t0 = performance.now();
        for (let k = 0; k < batches; k++) {
          fill(k);
          const got = new Float64Array(BATCH);
          for (let i = 0; i < BATCH; i++) got[i] = local.lookup(batch[2 * i], batch[2 * i + 1]);
        }
        if (r > 0) localRates.push((batches * BATCH) / (performance.now() - t0) * 1000);
      }
      out[`${transport}LookupsPerS`] = Math.round(summarize(rates).median);
      out[`${transport}InProcessLookupsPerS`] = Math.round(summarize(localRates).median);
      client.close();
    } finally {
      srv.proc.kill('SIGTERM');
      await once(srv.proc, 'exit');
    }
  }
  return out;
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { entries: { type: 'string', default: String(4 * 1024 * 1024) }, disk: { type: 'string', default: '65536' }, repeat: { type: 'string', default: '5' }, json: { type: 'boolean' } } });
  const entries = Number(values.entries);
  const blocks = Number(values.disk);
  const repeat = Number(values.repeat);
  const dir = mkdtempSync(join(tmpdir(), 'livemig-bench-cindex-'));
  try {
    progress('hash per block');
    const hashNs = hashFigures(repeat);
    progress(`table of ${entries} entries`);
    const tbl = tableFigures(entries, repeat, dir);
    progress('query socket');
    const query = await queryFigures(blocks, repeat, dir);
    progressDone();
    const ratios = {
      'sha1 / xxh64 time per block': ratio(hashNs['sha1 (node:crypto)'], hashNs['xxh64 (@node-rs/xxhash)']),
      'md5 / xxh64 time per block': ratio(hashNs['md5 (node:crypto)'], hashNs['xxh64 (@node-rs/xxhash)']),
      'query over tcp / same lookups in process': ratio(query.tcpLookupsPerS, query.tcpInProcessLookupsPerS),
      'query over unix / same lookups in process': ratio(query.unixLookupsPerS, query.unixInProcessLookupsPerS),
    };
    const command = `npm run bench -- cindex ${args.join(' ')}`.trim();
    const path = saveResult('cindex', command, { parameters: { entries, blocks, repeat, batch: BATCH }, hashNsPerBlock: hashNs, table: tbl, query, ratios });
    if (values.json) return void console.log(JSON.stringify({ hashNsPerBlock: hashNs, table: tbl, query, ratios, path }));
    console.log(`\nHash, ns per 4 KiB block (median of ${repeat})\n`);
    console.log(table(['hash', 'ns/block'], Object.entries(hashNs)));
    console.log(`\nTable and store, ${entries} entries\n`);
    console.log(table(['figure', 'value'], Object.entries(tbl)));
    console.log(`\nQuery socket, batches of ${BATCH} (half hits)\n`);
    console.log(table(['figure', 'lookups/s'], Object.entries(query)));
    console.log('\nRatios (same run)\n');
    console.log(table(['ratio', 'value'], Object.entries(ratios)));
    console.log(`\nraw figures: ${path}\ncommand: ${command}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
