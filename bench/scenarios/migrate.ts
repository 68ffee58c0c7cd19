/**
 * The migration benchmark: a matrix of workload × strategy × link bandwidth ×
 * memory size, each cell run several times by three processes as across hosts
 * (storage server, source, destination), over livemig's own rate limit or a
 * kernel-shaped link between network namespaces. Every run must verify. The
 * report (JSON, Markdown, SVG charts) gives medians with spread, the physical
 * bound of each run, a scaling table and the goal ratios with their references
 * measured in the same run.
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, basename, dirname } from 'node:path';
import { runLocalMigration, type LocalMigrationResult } from '../../src/demo/local-migration.ts';
import { killAll, LOOPBACK, type Placement } from '../../src/demo/hosts.ts';
import { makeDiskImage, diskBytesFor } from '../../src/demo/disk-image.ts';
import { nbdkitStorage } from '../lib/nbdkit-storage.ts';
import { ProcessMeter, type Usage } from '../lib/process-usage.ts';
import { STRATEGIES, type Strategy } from '../../src/migrate/result.ts';
import { WORKLOADS } from '../../src/guest/workloads/registry.ts';
import { parseSize, parseRate, formatBytes, formatRate } from '../../src/util/size.ts';
import { summarize, ratio } from '../lib/stats.ts';
import { saveResult, table, RESULTS_DIR } from '../lib/report.ts';
import { progress, progressDone } from '../lib/progress.ts';
import { createTopology, netnsAvailable, type Topology } from '../lib/netns.ts';
import { rawSocketRate, nbdcopyRate } from '../lib/references.ts';
import { renderSvg, groupedBars, lines, type Row } from '../lib/charts.ts';
import { codecOptions, heapOptions } from '../../src/cli/page-options.ts';

export const help = `Usage: npm run bench -- migrate [options]

Migrates guests with each strategy over a matrix of workload x strategy x link
bandwidth x memory size, --repeat runs per cell, alternating strategies. Every
run is verified: besides the engine's memory digests, both memories are
compared from scratch at the switch-over (the oracle, SHA-256 per MiB; its
cost is reported as checkMs, apart from the downtime). Writes bench/results/<date>-<name>.json (all
figures), <name>.md (tables) and <name>-charts/*.svg.

  --workloads LIST      default: all (${Object.keys(WORKLOADS).join(',')})
  --strategies LIST     default: ${STRATEGIES.join(',')}; NAME/plain runs NAME with the
                        page codecs off (no LZ4, no XBZRLE), e.g. p2b,p2b/plain
  --heap KIND           the guests' heap: random (default) or compressible
  --write-size BYTES    bytes 'dirty' rewrites per dirtied page (default 4096)
  --compress MODE       LZ4 for runs not /plain: auto (default), always, off
  --xbzrle-cache SIZE   XBZRLE cache for runs not /plain (default 64MiB; 0: none)
  --bandwidths LIST     migration link rates, default 1Gbit
  --memory LIST         guest sizes, default 256MiB
  --repeat N            runs per cell, default 3 (median and spread reported)
  --link engine|netns   engine: livemig's own rate limit, all on loopback (portable);
                        netns: source, destination and storage in network
                        namespaces, veth pairs shaped by tc tbf (root only;
                        the default when root)
  --storage-link RATE   netns only: each agent's link to the storage, default 10Gbit
  --storage livemig|nbdkit   the NBD server for the disk, default livemig
  --storage-rate RATE   limit storage reads with nbdkit's rate filter (implies nbdkit)
  --scaling LIST        also migrate idle guests of these sizes once per strategy
                        for the scaling table, e.g. 256MiB,1GiB,4GiB,8GiB
  --no-references       skip the raw-socket and engine-throughput runs
  --quick               pagecache, 128 MiB, 2 repeats, engine link, small references:
                        under 3 minutes, for checking a change
  --name NAME           results name, default migrate (migrate-quick with --quick)
  --out DIR             where results go, default bench/results
  --json                print the goal ratios and paths as JSON
  --log-level LEVEL     pino level of every livemig process, echoed on stderr
  --cpu-prof DIR        write a V8 CPU profile of every livemig process to DIR

Goals (ratios within one run): pagecache and idle at 1 Gbit/s, p2b link bytes
<= 0.5x and total time <= 0.6x of baseline, p2b downtime <= 1.1x baseline;
baseline on an idle guest, unthrottled loopback, streams >= 0.7x one raw Node
TCP socket; the fetch queue reads storage >= 0.8x nbdcopy on the same export.`;

interface Run extends LocalMigrationResult {
  bandwidth: number;
  /** CPU time of each process over the migration (the check excluded) and its peak memory, read from /proc. */
  cpu: { sourceMs: number; destinationMs: number };
  peakRss: { source: number; destination: number };
  storageServer: Usage;
  /** The time the link and the storage need for the bytes that crossed them, pipelined. */
  boundMs: number;
  efficiency: number;
}

interface Goal {
  value: number;
  goal: number;
  /** 'max': value must not exceed the goal; 'min': must reach it. */
  kind: 'max' | 'min';
  what: string;
}

const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const med = (xs: number[]) => summarize(xs).median;
const spread = (xs: number[]) => {
  const s = summarize(xs);
  return s.runs.length > 1 ? ` (${fmt(s.min)}–${fmt(s.max)})` : '';
};
const fmt = (x: number) => (Number.isInteger(x) || Math.abs(x) >= 100 ? String(Math.round(x)) : x.toFixed(Math.abs(x) >= 10 ? 1 : 2));
const mib = (b: number) => b / (1 << 20);

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      workloads: { type: 'string' },
      strategies: { type: 'string', default: STRATEGIES.join(',') },
      heap: { type: 'string' },
      'write-size': { type: 'string' },
      compress: { type: 'string' },
      'xbzrle-cache': { type: 'string' },
      bandwidths: { type: 'string', default: '1Gbit' },
      memory: { type: 'string', default: '256MiB' },
      repeat: { type: 'string', default: '3' },
      link: { type: 'string' },
      'storage-link': { type: 'string', default: '10Gbit' },
      storage: { type: 'string', default: 'livemig' },
      'storage-rate': { type: 'string' },
      scaling: { type: 'string' },
      'no-references': { type: 'boolean' },
      quick: { type: 'boolean' },
      'log-level': { type: 'string', default: 'silent' },
      'cpu-prof': { type: 'string' },
      name: { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const quick = !!values.quick;
  const workloads = quick ? ['pagecache'] : list(values.workloads ?? Object.keys(WORKLOADS).join(','));
  for (const w of workloads) if (!WORKLOADS[w]) throw new Error(`unknown workload ${w} (have: ${Object.keys(WORKLOADS).join(', ')})`);
  const strategies = list(values.strategies!) as Strategy[];
  for (const s of strategies) if (!STRATEGIES.includes(baseStrategy(s)) || !/^[^/]+(\/plain)?$/.test(s)) throw new Error(`unknown strategy ${s} (have: ${STRATEGIES.join(', ')}, each also as NAME/plain)`);
  const heap = heapOptions(values.heap, values['write-size']);
  const codecs = codecOptions(values.compress, values['xbzrle-cache']);
  const bandwidths = list(values.bandwidths!).map((b) => parseRate(b) ?? fail(`bad bandwidth ${b}`));
  const sizes = list(quick ? '128MiB' : values.memory!).map((m) => parseSize(m) ?? fail(`bad memory size ${m}`));
  const repeat = quick ? 2 : Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error('--repeat must be a positive integer');
  const scaling = values.scaling && !quick ? list(values.scaling).map((m) => parseSize(m) ?? fail(`bad scaling size ${m}`)) : [];
  const storageRate = values['storage-rate'] ? parseRate(values['storage-rate']) ?? fail('bad --storage-rate') : undefined;
  const storage = { server: (storageRate ? 'nbdkit' : values.storage) as 'livemig' | 'nbdkit', rate: storageRate };
  if (storage.server !== 'livemig' && storage.server !== 'nbdkit') throw new Error('--storage is livemig or nbdkit');
  const whyNoNetns = netnsAvailable();
  const link = quick ? 'engine' : values.link ?? (whyNoNetns ? 'engine' : 'netns');
  if (link !== 'engine' && link !== 'netns') throw new Error('--link is engine or netns');
  if (link === 'netns' && whyNoNetns) throw new Error(whyNoNetns);
  const storageLink = link === 'netns' ? parseRate(values['storage-link']!) ?? fail('bad --storage-link') : undefined;
  const name = values.name ?? (quick ? 'migrate-quick' : 'migrate');
  const command = `npm run bench -- migrate ${args.join(' ')}`.trim();

  const dir = mkdtempSync(join(tmpdir(), 'livemig-bench-migrate-'));
  let topology: Topology | null = null;
  // Interrupted: leave no namespaces, processes or images behind.
  const interrupted = () => {
    killAll();
    (topology as Topology | null)?.destroy();
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const references: Record<string, number> = {};
  const runs: Record<string, Run[]> = {};
  const scalingRuns: Run[] = [];
  const t0 = performance.now();
  try {
    const images = new Map<number, string>();
    const imageFor = (memoryBytes: number) => {
      const bytes = diskBytesFor(memoryBytes);
      if (!images.has(bytes)) {
        progress(`writing a ${formatBytes(bytes)} disk image`);
        images.set(bytes, makeDiskImage(join(dir, `disk-${bytes}.img`), bytes));
      }
      return images.get(bytes)!;
    };
    const placementFor = (bandwidth: number): Placement => {
      if (link === 'engine') return LOOPBACK;
      if (topology) topology.shape({ migration: bandwidth, storage: storageLink });
      else topology = createTopology({ migration: bandwidth, storage: storageLink });
      return topology.placement;
    };
    const migrateOnce = async (o: { workload: string; strategy: Strategy; bandwidth: number; memoryBytes: number; seed: number }): Promise<Run> => {
      const placement = placementFor(o.bandwidth);
      const imageBytes = diskBytesFor(o.memoryBytes);
      const meter = new ProcessMeter<'source' | 'destination' | 'storage'>();
      let usage!: Record<'source' | 'destination' | 'storage', Usage>;
      const plain = o.strategy.endsWith('/plain');
      const res = await runLocalMigration({
        memoryBytes: o.memoryBytes, workload: o.workload, strategy: baseStrategy(o.strategy), downtimeLimitMs: 300, seed: o.seed,
        ...heap, codecs: plain ? { compress: 'off', xbzrleCacheBytes: 0 } : codecs,
        maxBandwidth: link === 'engine' ? o.bandwidth : 0, diskImage: imageFor(o.memoryBytes), placement, logLevel: values['log-level'], profileDir: values['cpu-prof'],
        storage: storage.server === 'nbdkit' ? nbdkitStorage(storage.rate) : undefined,
        beforeMigrate: async (run) => {
          references.nbdcopy ??= await nbdcopyRate(run.storage.uri('destination'), imageBytes, run.hosts.placement.wrap('destination'));
          meter.start(run.pids);
        },
        afterMigrate: (run) => void (usage = meter.stop(run.pids)),
      });
      if (!res.verified || !res.destinationRunning) throw new Error(`${o.workload} ${o.strategy}: the destination did not verify and run`);
      const storageCap = Math.min(storageLink ?? Infinity, storageRate ?? Infinity, references.nbdcopy ?? Infinity);
      const boundMs = Math.max(res.linkBytes / o.bandwidth, res.nasBytes / storageCap) * 1000;
      return {
        ...res, strategy: o.strategy, bandwidth: o.bandwidth, boundMs: Math.round(boundMs), efficiency: Math.round((boundMs / res.totalTimeMs) * 1000) / 1000,
        cpu: { sourceMs: usage.source.cpuMs, destinationMs: usage.destination.cpuMs }, peakRss: { source: usage.source.peakRss, destination: usage.destination.peakRss }, storageServer: usage.storage,
      };
    };

    const cells = workloads.flatMap((workload) => bandwidths.flatMap((bandwidth) => sizes.map((memoryBytes) => ({ workload, bandwidth, memoryBytes }))));
    let done = 0;
    const total = cells.length * repeat * strategies.length;
    for (const c of cells) {
      for (let r = 0; r < repeat; r++) {
        const order = r % 2 ? [...strategies].reverse() : strategies;
        for (const strategy of order) {
          progress(`[${++done}/${total}] ${c.workload} ${strategy} ${formatRate(c.bandwidth)} ${formatBytes(c.memoryBytes)} run ${r + 1}/${repeat} (${Math.round((performance.now() - t0) / 1000)} s)`);
          (runs[key(c.workload, strategy, c.bandwidth, c.memoryBytes)] ??= []).push(await migrateOnce({ ...c, strategy, seed: r + 1 }));
        }
      }
    }
    for (const memoryBytes of scaling) {
      for (const strategy of strategies) {
        progress(`scaling: idle ${strategy} ${formatBytes(memoryBytes)} (${Math.round((performance.now() - t0) / 1000)} s)`);
        scalingRuns.push(await migrateOnce({ workload: 'idle', strategy, bandwidth: bandwidths[0], memoryBytes, seed: 1 }));
      }
    }
    if (!values['no-references']) {
      // Engine throughput: baseline, idle, unthrottled, on loopback, against one raw socket.
      const engineBytes = quick ? 256 << 20 : 1 << 30;
      progress(`reference: one raw Node TCP socket, ${formatBytes(engineBytes)}`);
      references.rawSocket = med([await rawSocketRate(engineBytes), await rawSocketRate(engineBytes), await rawSocketRate(engineBytes)]);
      const engine: number[] = [];
      for (let r = 0; r < (quick ? 1 : 3); r++) {
        progress(`reference: baseline, idle ${formatBytes(engineBytes)} guest, unthrottled loopback, run ${r + 1}`);
        const res = await runLocalMigration({ memoryBytes: engineBytes, workload: 'idle', strategy: 'baseline', maxBandwidth: 0, downtimeLimitMs: 300, diskImage: imageFor(engineBytes), seed: r + 1 });
        if (!res.verified) throw new Error('engine throughput run did not verify');
        engine.push(res.roundStats[0].bytes / (res.roundStats[0].ms / 1000));
      }
      references.engineStream = med(engine);
    }
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    progressDone();
    (topology as Topology | null)?.destroy();
    rmSync(dir, { recursive: true, force: true });
  }

  const goals = { ...computeGoals(runs, strategies, workloads, bandwidths, sizes, references), ...codecGoals(runs, strategies, workloads, bandwidths, sizes, heap) };
  const parameters = { workloads, strategies, bandwidths, memoryBytes: sizes, repeat, link, storageLink, storage, scaling, quick, ...heap, codecs };
  const path = saveResult(name, command, { parameters, elapsedMs: Math.round(performance.now() - t0), references, goals, runs, scalingRuns }, values.out ?? RESULTS_DIR);
  const md = await writeReport(name, path, command, parameters, runs, scalingRuns, references, goals);
  if (values.json) return void console.log(JSON.stringify({ goals, path, report: md }));
  console.log(headline(runs, workloads, bandwidths, sizes));
  console.log(`\n${goalTable(goals)}`);
  console.log(`\nreport: ${md}\nraw figures: ${path}\ncommand: ${command}`);
}

function fail(message: string): never {
  throw new Error(message);
}

const key = (w: string, s: string, bw: number, mem: number) => [w, s, formatRate(bw), formatBytes(mem)].join('|');

function computeGoals(runs: Record<string, Run[]>, strategies: Strategy[], workloads: string[], bandwidths: number[], sizes: number[], refs: Record<string, number>): Record<string, Goal> {
  const goals: Record<string, Goal> = {};
  const gbit = bandwidths.find((b) => b === 125_000_000) ?? bandwidths[0];
  if (strategies.includes('p2b') && strategies.includes('baseline')) {
    for (const w of workloads.filter((x) => x === 'pagecache' || x === 'idle')) {
      const p = runs[key(w, 'p2b', gbit, sizes[0])];
      const b = runs[key(w, 'baseline', gbit, sizes[0])];
      const m = (rs: Run[], f: (r: Run) => number) => med(rs.map(f));
      goals[`${w}: link bytes p2b / baseline`] = { value: ratio(m(p, (r) => r.linkBytes), m(b, (r) => r.linkBytes)), goal: 0.5, kind: 'max', what: `at ${formatRate(gbit)}` };
      goals[`${w}: total time p2b / baseline`] = { value: ratio(m(p, (r) => r.totalTimeMs), m(b, (r) => r.totalTimeMs)), goal: 0.6, kind: 'max', what: `at ${formatRate(gbit)}` };
      goals[`${w}: downtime p2b / baseline`] = { value: ratio(m(p, (r) => r.downtimeMs), m(b, (r) => r.downtimeMs)), goal: 1.1, kind: 'max', what: `at ${formatRate(gbit)}` };
    }
  }
  if (strategies.includes('auto') && strategies.includes('baseline')) {
    // The default strategy must never cost time: at every link rate, at most baseline's total.
    for (const bw of bandwidths) {
      for (const w of workloads) {
        const a = runs[key(w, 'auto', bw, sizes[0])];
        const b = runs[key(w, 'baseline', bw, sizes[0])];
        if (!a || !b) continue;
        goals[`${w}: total time auto / baseline at ${formatRate(bw)}`] = { value: ratio(med(a.map((r) => r.totalTimeMs)), med(b.map((r) => r.totalTimeMs))), goal: 1.0, kind: 'max', what: `at ${formatRate(bw)}` };
      }
    }
  }
  if (refs.engineStream && refs.rawSocket) {
    goals['engine stream / raw Node TCP socket'] = { value: ratio(refs.engineStream, refs.rawSocket), goal: 0.7, kind: 'min', what: 'baseline, idle guest, unthrottled loopback, round 0 bytes per second' };
  }
  const fetchRates = Object.values(runs).flat().filter((r) => r.strategy === 'p2b' && r.fetch.readRate > 0).map((r) => r.fetch.readRate);
  if (fetchRates.length && refs.nbdcopy) {
    goals['fetch queue storage reads / nbdcopy'] = { value: ratio(med(fetchRates), refs.nbdcopy), goal: 0.8, kind: 'min', what: 'read rate while reads are outstanding, median of p2b runs; nbdcopy from the destination host' };
  }
  return goals;
}

/** A strategy without its /plain suffix (the page codecs off). */
function baseStrategy(label: string): Strategy {
  return label.replace(/\/plain$/, '') as Strategy;
}

/**
 * The page codecs against the same strategy with them off (NAME/plain), same run:
 * on a compressible heap written in part, link bytes <= 0.4x; otherwise they must
 * switch themselves off, so total time no worse (within 5 %, the noise of one
 * loaded machine) and link bytes no more.
 */
function codecGoals(runs: Record<string, Run[]>, strategies: string[], workloads: string[], bandwidths: number[], sizes: number[], heap: { heap?: string; writeSize?: number }): Record<string, Goal> {
  const goals: Record<string, Goal> = {};
  const realistic = heap.heap === 'compressible' && (heap.writeSize ?? 4096) < 4096;
  const m = (rs: Run[], f: (r: Run) => number) => med(rs.map(f));
  for (const s of strategies.filter((x) => !x.endsWith('/plain') && strategies.includes(`${x}/plain`))) {
    for (const w of workloads) {
      for (const bw of bandwidths) {
        const on = runs[key(w, s, bw, sizes[0])];
        const off = runs[key(w, `${s}/plain`, bw, sizes[0])];
        const what = `${formatRate(bw)}, heap ${heap.heap ?? 'random'}, write size ${heap.writeSize ?? 4096}`;
        const bytes = ratio(m(on, (r) => r.linkBytes), m(off, (r) => r.linkBytes));
        goals[`${w}: link bytes ${s} / ${s}/plain`] = { value: bytes, goal: realistic ? 0.4 : 1.0, kind: 'max', what };
        if (!realistic) goals[`${w}: total time ${s} / ${s}/plain`] = { value: ratio(m(on, (r) => r.totalTimeMs), m(off, (r) => r.totalTimeMs)), goal: 1.05, kind: 'max', what };
        const stock = runs[key(w, 'baseline/plain', bw, sizes[0])];
        if (realistic && stock && s !== 'baseline') goals[`${w}: link bytes ${s} / baseline/plain`] = { value: ratio(m(on, (r) => r.linkBytes), m(stock, (r) => r.linkBytes)), goal: 0.4, kind: 'max', what };
      }
    }
  }
  return goals;
}

const met = (g: Goal) => (g.kind === 'max' ? g.value <= g.goal : g.value >= g.goal);

function goalTable(goals: Record<string, Goal>): string {
  return table(['goal (same run)', 'value', 'target', 'met'], Object.entries(goals).map(([k, g]) => [k, g.value.toFixed(2), `${g.kind === 'max' ? '<=' : '>='} ${g.goal}`, met(g) ? 'yes' : 'NO']));
}

/** p2b against baseline per workload: the table the README quotes. */
function headline(runs: Record<string, Run[]>, workloads: string[], bandwidths: number[], sizes: number[]): string {
  const rows: (string | number)[][] = [];
  for (const bw of bandwidths) {
    for (const mem of sizes) {
      for (const w of workloads) {
        const b = runs[key(w, 'baseline', bw, mem)];
        const p = runs[key(w, 'p2b', bw, mem)];
        if (!b || !p) continue;
        const m = (rs: Run[], f: (r: Run) => number) => med(rs.map(f));
        rows.push([w, formatRate(bw), formatBytes(mem),
          `${fmt(m(b, (r) => r.totalTimeMs))} / ${fmt(m(p, (r) => r.totalTimeMs))}`, (m(p, (r) => r.totalTimeMs) / m(b, (r) => r.totalTimeMs)).toFixed(2),
          `${formatBytes(m(b, (r) => r.linkBytes))} / ${formatBytes(m(p, (r) => r.linkBytes))}`, (m(p, (r) => r.linkBytes) / m(b, (r) => r.linkBytes)).toFixed(2),
          `${fmt(m(b, (r) => r.downtimeMs))} / ${fmt(m(p, (r) => r.downtimeMs))}`]);
      }
    }
  }
  return table(['workload', 'link', 'memory', 'total ms baseline / p2b', 'ratio', 'link bytes baseline / p2b', 'ratio', 'downtime ms baseline / p2b'], rows);
}

function cellTable(runs: Record<string, Run[]>): string {
  const rows = Object.entries(runs).map(([k, rs]) => {
    const [w, s, bw, mem] = k.split('|');
    const col = (f: (r: Run) => number) => { const xs = rs.map(f); return `${fmt(med(xs))}${spread(xs)}`; };
    return [w, s, bw, mem, col((r) => r.totalTimeMs), col((r) => r.downtimeMs), col((r) => r.rounds), col((r) => mib(r.linkBytes)), col((r) => mib(r.nasBytes)),
      `${fmt(med(rs.map((r) => r.pages.full)))} (${fmt(med(rs.map((r) => r.pages.lz4 ?? 0)))}/${fmt(med(rs.map((r) => r.pages.xbzrle ?? 0)))}) / ${fmt(med(rs.map((r) => r.pages.zero)))} / ${fmt(med(rs.map((r) => r.pages.ref)))}`,
      `${fmt(med(rs.map((r) => r.cpu.sourceMs)))} / ${fmt(med(rs.map((r) => r.cpu.destinationMs)))} / ${fmt(med(rs.map((r) => r.storageServer.cpuMs)))}`,
      `${fmt(mib(med(rs.map((r) => r.peakRss.source))))} / ${fmt(mib(med(rs.map((r) => r.peakRss.destination))))}`,
      baseStrategy(s) !== 'baseline' ? `${fmt(mib(med(rs.map((r) => r.fetch.readRate))))} MiB/s, ${fmt(med(rs.map((r) => r.fetch.meanLatencyMs)))} ms, ${fmt(med(rs.map((r) => r.fetch.maxBacklog)))}/${fmt(med(rs.map((r) => r.fetch.meanBacklog)))}` : '–',
      fmt(med(rs.map((r) => r.boundMs))), col((r) => r.efficiency)];
  });
  return table(['workload', 'strategy', 'link', 'memory', 'total ms', 'downtime ms', 'rounds', 'link MiB', 'storage MiB', 'pages full (LZ4/XBZRLE)/zero/ref', 'CPU ms src/dst/storage', 'peak RSS MiB src/dst', 'fetch: rate, latency, backlog max/mean', 'bound ms', 'efficiency'], rows);
}

/** Least-squares line through (size, value); the worst relative distance of a point from it. */
function linearity(points: { x: number; y: number }[]): { slope: number; intercept: number; worst: number } {
  const n = points.length;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  const sxx = points.reduce((a, p) => a + (p.x - mx) ** 2, 0);
  const slope = sxx ? points.reduce((a, p) => a + (p.x - mx) * (p.y - my), 0) / sxx : 0;
  const intercept = my - slope * mx;
  const worst = Math.max(...points.map((p) => Math.abs(p.y - (intercept + slope * p.x)) / p.y));
  return { slope, intercept, worst };
}

function scalingSection(scalingRuns: Run[]): string {
  if (!scalingRuns.length) return '';
  const rows = scalingRuns.map((r) => [r.strategy, formatBytes(r.memoryBytes), r.totalTimeMs, fmt(r.totalTimeMs / (r.memoryBytes / 2 ** 30)), r.downtimeMs,
    fmt(mib(r.peakRss.source)), fmt(mib(r.peakRss.destination)), fmt(r.cpu.destinationMs), r.verified ? 'yes' : 'NO']);
  const fits = [...new Set(scalingRuns.map((r) => r.strategy))].map((s) => {
    const rs = scalingRuns.filter((r) => r.strategy === s);
    if (rs.length < 3) return `- ${s}: too few sizes for a fit`;
    const t = linearity(rs.map((r) => ({ x: r.memoryBytes / 2 ** 30, y: r.totalTimeMs })));
    const m = linearity(rs.map((r) => ({ x: r.memoryBytes / 2 ** 30, y: r.peakRss.destination / 2 ** 20 })));
    return `- ${s}: time ≈ ${fmt(t.intercept)} ms + ${fmt(t.slope)} ms/GiB, worst point ${(t.worst * 100).toFixed(1)} % off the line; destination memory ≈ ${fmt(m.intercept)} MiB + ${fmt(m.slope)} MiB/GiB, worst ${(m.worst * 100).toFixed(1)} % off (goal: within 15 %)`;
  });
  return `## Scaling (idle guest, ${formatRate(scalingRuns[0].bandwidth)})\n\n${table(['strategy', 'memory', 'total ms', 'ms per GiB', 'downtime ms', 'peak RSS src MiB', 'peak RSS dst MiB', 'dst CPU ms', 'verified'], rows)}\n\n${fits.join('\n')}\n`;
}

async function writeReport(name: string, jsonPath: string, command: string, parameters: Record<string, unknown>, runs: Record<string, Run[]>, scalingRuns: Run[], refs: Record<string, number>, goals: Record<string, Goal>): Promise<string> {
  const chartDir = join(dirname(jsonPath), `${basename(jsonPath, '.json')}-charts`);
  mkdirSync(chartDir, { recursive: true });
  const charts: string[] = [];
  const chart = async (file: string, title: string, spec: Parameters<typeof renderSvg>[0]) => {
    writeFileSync(join(chartDir, file), await renderSvg(spec));
    charts.push(`### ${title}\n\n![${title}](${basename(chartDir)}/${file})\n`);
  };
  const all = Object.entries(runs).map(([k, rs]) => ({ k, rs, w: rs[0].workload, s: rs[0].strategy, cell: k.split('|').slice(2).join(', ') }));
  const perCell = (f: (r: Run) => number, field: string): Row[] => all.map(({ rs, w, s, cell }) => ({ workload: w, strategy: s, cell, [field]: med(rs.map(f)) }));
  await chart('time.svg', 'Total time and downtime per workload', {
    vconcat: [
      groupedBars({ title: 'total time (median)', rows: perCell((r) => r.totalTimeMs, 'ms'), x: 'workload', y: 'ms', yTitle: 'ms', color: 'strategy', column: 'cell' }),
      groupedBars({ title: 'downtime (median)', rows: perCell((r) => r.downtimeMs, 'ms'), x: 'workload', y: 'ms', yTitle: 'ms', color: 'strategy', column: 'cell' }),
    ],
  } as Parameters<typeof renderSvg>[0]);
  await chart('link-bytes.svg', 'Bytes on the migration link', groupedBars({ title: 'link MiB (median)', rows: perCell((r) => mib(r.linkBytes), 'MiB'), x: 'workload', y: 'MiB', yTitle: 'MiB', color: 'strategy', column: 'cell' }));
  await chart('efficiency.svg', 'Efficiency against the physical bound', groupedBars({ title: 'bound / total time (1 = as fast as link and storage allow)', rows: perCell((r) => r.efficiency, 'efficiency'), x: 'workload', y: 'efficiency', yTitle: 'efficiency', color: 'strategy', column: 'cell' }));
  // Rounds of the median-time run of each workload and strategy.
  const rounds: Row[] = [];
  for (const { rs, w, s } of all) {
    const r = [...rs].sort((a, b) => a.totalTimeMs - b.totalTimeMs)[rs.length >> 1];
    for (const st of r.roundStats) rounds.push({ workload: w, strategy: s, round: st.round, 'MiB sent': mib(st.bytes), 'dirty pages after': st.dirtyAfter });
  }
  await chart('rounds.svg', 'Per round: bytes sent and pages dirtied meanwhile (median run)', {
    vconcat: [
      lines({ title: 'MiB sent per round', rows: rounds, x: 'round', xTitle: 'round', y: 'MiB sent', yTitle: 'MiB', color: 'strategy', column: 'workload', logY: true }),
      lines({ title: 'pages dirty at the end of each round', rows: rounds, x: 'round', xTitle: 'round', y: 'dirty pages after', yTitle: 'pages', color: 'strategy', column: 'workload', logY: true }),
    ],
  } as Parameters<typeof renderSvg>[0]);
  if (scalingRuns.length) {
    await chart('scaling.svg', 'Scaling with memory size', lines({ title: 'total time by guest memory (idle)', rows: scalingRuns.map((r) => ({ strategy: r.strategy, GiB: r.memoryBytes / 2 ** 30, ms: r.totalTimeMs })), x: 'GiB', xTitle: 'guest memory (GiB)', y: 'ms', yTitle: 'ms', color: 'strategy' }));
  }

  const p = parameters as { link: string; storageLink?: number; storage: { server: string; rate?: number }; repeat: number };
  const linkText = p.link === 'netns'
    ? `kernel-shaped links between network namespaces (tc tbf; storage links ${formatRate(p.storageLink!)})`
    : "livemig's own rate limit, all processes on loopback";
  const md = `# Migration benchmark: ${name}

Command: \`${command}\`
Raw figures: [${basename(jsonPath)}](${basename(jsonPath)}) (machine, commit, every run).
Link: ${linkText}. Storage: ${p.storage.server === 'nbdkit' ? `nbdkit file${p.storage.rate ? `, rate filter ${formatRate(p.storage.rate)}` : ''}` : 'livemig nbd serve'}.
Every figure is the median of ${p.repeat} run${p.repeat === 1 ? '' : 's'}, with the range in brackets; every run verified the destination's memory against the source's.

## p2b against baseline

${headline(runs, [...new Set(all.map((a) => a.w))], [...new Set(all.map((a) => a.rs[0].bandwidth))], [...new Set(all.map((a) => a.rs[0].memoryBytes))])}

## Goals

${goalTable(goals)}

References measured in this run: ${Object.entries(refs).map(([k, v]) => `${k} ${formatRate(v)}`).join(', ') || 'none'}.

## Every cell

CPU is each process's user + system time over the migration, all threads (the source's includes its running guest). The bound is the time the link and the storage would need for the bytes that crossed them, pipelined; efficiency is bound / total time.

${cellTable(runs)}

${scalingSection(scalingRuns)}
## Charts (rendered with Vega-Lite)

${charts.join('\n')}`;
  const mdPath = jsonPath.replace(/\.json$/, '.md');
  writeFileSync(mdPath, md);
  return mdPath;
}
