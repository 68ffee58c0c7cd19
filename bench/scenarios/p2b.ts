/**
 * The p2b map's two speeds. In memory: map updates (read mappings, remaps,
 * invalidations, write mappings with flushes) on an 8 GiB guest's map, against
 * the floor of storing the same values into typed arrays. On disk: changed
 * entries persisted by P2bStore, against a plain better-sqlite3 insert of the
 * same rows in one transaction. Goals: ≥ 2 M updates/s; ≥ 300 k rows/s.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { P2bMap } from '../../src/p2b/map.ts';
import { P2bStore } from '../../src/p2b/store.ts';
import { Rng } from '../../src/util/rng.ts';
import { summarize, ratio } from '../lib/stats.ts';
import { saveResult, table } from '../lib/report.ts';
import { progress, progressDone } from '../lib/progress.ts';

export const help = `Usage: npm run bench -- p2b [--pages 2097152] [--updates 4000000] [--rows 1000000] [--repeat 5] [--json]

In memory: map updates per second on a map of --pages (default: an 8 GiB guest).
On disk: rows per second persisted to SQLite (WAL) in one batch.
Each against a reference measured in the same run.`;

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      pages: { type: 'string', default: String(2 * 1024 * 1024) },
      updates: { type: 'string', default: '4000000' },
      rows: { type: 'string', default: '1000000' },
      repeat: { type: 'string', default: '5' },
      json: { type: 'boolean' },
    },
  });
  const pages = Number(values.pages);
  const updates = Number(values.updates);
  const rows = Math.min(Number(values.rows), pages);
  const repeat = Number(values.repeat);
  const rng = new Rng(3);
  const pageOf = Uint32Array.from({ length: updates }, () => rng.int(pages));
  const blockOf = Uint32Array.from({ length: updates }, () => rng.int(pages * 4));
  const kind = Uint8Array.from({ length: updates }, () => rng.int(10));

  const map = P2bMap.allocate(pages);
  const mapUpdates = () => {
    const t0 = performance.now();
    for (let i = 0; i < updates; i++) {
      const k = kind[i];
      if (k < 6) map.mapRead(pageOf[i], blockOf[i]);
      else if (k < 9) map.invalidatePage(pageOf[i]);
      else {
        map.mapWrite(pageOf[i], blockOf[i]);
        map.markFlushed(pageOf[i], blockOf[i]);
      }
    }
    return performance.now() - t0;
  };
  const block = new Uint32Array(pages);
  const state = new Uint8Array(pages);
  const rawStores = () => {
    const t0 = performance.now();
    for (let i = 0; i < updates; i++) {
      block[pageOf[i]] = blockOf[i];
      state[pageOf[i]] = kind[i] < 6 ? 1 : kind[i] < 9 ? 0 : 3;
    }
    return performance.now() - t0;
  };

  const dir = mkdtempSync(join(tmpdir(), 'livemig-bench-p2b-'));
  try {
    const mem = { map: [] as number[], raw: [] as number[] };
    for (let r = 0; r < repeat; r++) {
      progress(`memory run ${r + 1}/${repeat}`);
      mem.map.push(mapUpdates());
      mem.raw.push(rawStores());
    }

    const disk = { store: [] as number[], plain: [] as number[] };
    const meta = { guest: 'bench', pages, pageSize: 4096, regions: [{ index: 0, firstPage: 0, pages }], storage: 'bench', storageSize: pages * 4096 };
    for (let r = 0; r < repeat; r++) {
      progress(`disk run ${r + 1}/${repeat}`);
      const m = P2bMap.allocate(pages);
      for (let p = 0; p < rows; p++) m.mapRead(p, p * 3);
      const store = P2bStore.create(join(dir, `store-${r}.sqlite`), meta);
      let t0 = performance.now();
      const written = store.writeChanges(m);
      disk.store.push(performance.now() - t0);
      store.close();
      if (written !== rows) throw new Error(`persisted ${written} rows, expected ${rows}`);

      const db = new Database(join(dir, `plain-${r}.sqlite`));
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.exec('CREATE TABLE t (page INTEGER PRIMARY KEY, block INTEGER NOT NULL, state INTEGER NOT NULL, updated_ms INTEGER NOT NULL)');
      const ins = db.prepare('INSERT INTO t VALUES (?, ?, ?, ?)');
      t0 = performance.now();
      db.transaction(() => {
        for (let p = 0; p < rows; p++) ins.run(p, p * 3, 1, 0);
      })();
      disk.plain.push(performance.now() - t0);
      db.close();
    }
    progressDone();

    const perS = (n: number, ms: number) => Math.round(n / (ms / 1000));
    const s = { map: summarize(mem.map), raw: summarize(mem.raw), store: summarize(disk.store), plain: summarize(disk.plain) };
    const figures = {
      mapUpdatesPerS: perS(updates, s.map.median),
      rawStoresPerS: perS(updates, s.raw.median),
      storeRowsPerS: perS(rows, s.store.median),
      plainInsertRowsPerS: perS(rows, s.plain.median),
      runsMs: s,
    };
    const ratios = {
      'map updates / raw typed-array stores': { value: ratio(s.raw.median, s.map.median), what: 'the cost of the block index and counters' },
      'persisted rows / plain SQLite insert': { value: ratio(s.plain.median, s.store.median), what: 'the cost of the block index and the changed-bit scan' },
    };
    const goals = [
      ['map updates per second', figures.mapUpdatesPerS, 2_000_000],
      ['rows persisted per second', figures.storeRowsPerS, 300_000],
    ] as const;
    const command = `npm run bench -- p2b ${args.join(' ')}`.trim();
    const path = saveResult('p2b', command, { parameters: { pages, updates, rows, repeat }, figures, ratios, goals: Object.fromEntries(goals.map(([k, v, g]) => [k, { value: v, goal: g }])) });
    if (values.json) return void console.log(JSON.stringify({ figures, ratios, path }));
    console.log(`\np2b map on ${pages} pages (${((pages * 4096) / 2 ** 30).toFixed(0)} GiB guest), median of ${repeat}\n`);
    console.log(table(['measurement', 'per second', 'goal', 'met'], [
      ...goals.map(([k, v, g]) => [k, v.toLocaleString('en'), `>= ${g.toLocaleString('en')}`, v >= g ? 'yes' : 'NO']),
      ['reference: raw typed-array stores', figures.rawStoresPerS.toLocaleString('en'), '-', '-'],
      ['reference: plain SQLite insert', figures.plainInsertRowsPerS.toLocaleString('en'), '-', '-'],
    ]));
    console.log(`\n${table(['ratio (same run)', 'value'], Object.entries(ratios).map(([k, r]) => [k, r.value.toFixed(2)]))}`);
    console.log(`\nraw figures: ${path}\ncommand: ${command}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
