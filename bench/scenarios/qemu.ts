/**
 * The stock-QEMU benchmark: one warm guest (its files read once, so its page cache
 * holds disk blocks) migrated directly QEMU to QEMU and through the two
 * `livemig qemu-proxy` processes, same run, same link, alternating; its disk and
 * content index served by `livemig nbd serve --content-index` on a storage host.
 * Cases: the link shaped to --bandwidth (the headline) and unshaped. Every run is
 * verified (memory identical, guest alive after `cont`).
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { buildGuestImage, kernelCommandLine, READY_LINE } from '../../src/qemu/guest-image/index.ts';
import { launchQemu } from '../../src/qemu/launch.ts';
import { setCapabilities, setParameters } from '../../src/qemu/migration-control.ts';
import { parseSize, parseRate, formatBytes, formatRate } from '../../src/util/size.ts';
import { createTopology, netnsAvailable, type Topology } from '../lib/netns.ts';
import { placeHosts, startStorage, type Hosts } from '../lib/qemu-hosts.ts';
import { directRun, proxyRun, type Guest, type ProxyFigures, type RunFigures } from '../lib/qemu-runs.ts';
import { saveResult, table, RESULTS_DIR } from '../lib/report.ts';
import { summarize } from '../lib/stats.ts';
import { progress } from '../lib/progress.ts';

export const help = `Usage: npm run bench -- qemu [options]

A warm stock QEMU guest (TCG) migrated directly QEMU to QEMU and through the
livemig QEMU stream proxies ('livemig qemu-proxy'), its disk served with a
content index by 'livemig nbd serve --content-index'; storage, source and
destination in network namespaces (root), the migration link shaped by tc tbf.
Cases: the link at --bandwidth (headline) and unshaped. Runs alternate direct
and proxy; every run is verified (pmemsave of both sides identical, the guest
answers after 'cont'). Progress on stderr.

  --guest MEM:DISK    guest memory and disk image size, default 1GiB:1152MiB
  --bandwidth RATE    the shaped migration link, default 1Gbit
  --storage-link RATE each host's link to the storage, default 10Gbit
  --repeat N          runs per case and way, default 3 (medians reported)
  --no-unthrottled    only the headline case
  --keep SIZE         the source proxy's --keep (referenced pages in flight
                      until the destination wrote them to QEMU)
  --quick             256MiB:288MiB guest, 1 run per case
  --name NAME         results name, default qemu (qemu-quick with --quick)
  --out DIR           where results go, default bench/results
  --cpu-prof DIR      write a V8 CPU profile of every livemig process to DIR
  --json              print the headline as one JSON object, the last line of stdout:
                      {direct:{linkBytes,totalMs,downtimeMs},
                       proxy:{linkBytes,totalMs,downtimeMs,refPages,fullPages,zeroPages},
                       verified}

totalMs: the source's MIGRATION setup event to the destination QEMU's MIGRATION
completed; downtimeMs: QEMU's query-migrate downtime at the source; pauseMs: the
source's STOP to the destination's completion; CPU s: CPU time of every
process over the migration. QEMU runs unthrottled
(max-bandwidth 100G), the link limits it.

Goals (medians, same run): at --bandwidth, proxy link bytes <= 0.25x direct, total
time <= 0.6x direct, downtime <= direct + 50 ms; unshaped, total <= 1.25x direct.`;

/** QEMU's max-bandwidth when "unthrottled": far above what the link and two cores reach. */
const UNTHROTTLED = 100e9;

interface Case {
  name: 'shaped' | 'unshaped';
  bandwidth: number; // 0: unshaped
  direct: RunFigures[];
  proxy: ProxyFigures[];
  load: number[]; // 1-minute load average before each pair
}

interface Goal {
  what: string;
  value: number;
  goal: number;
  met: boolean;
}

const med = (xs: number[]) => summarize(xs).median;
const fail = (m: string): never => {
  throw new Error(m);
};

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      guest: { type: 'string' }, bandwidth: { type: 'string', default: '1Gbit' }, 'storage-link': { type: 'string', default: '10Gbit' },
      repeat: { type: 'string', default: '3' }, 'no-unthrottled': { type: 'boolean' }, quick: { type: 'boolean' },
      name: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' }, 'cpu-prof': { type: 'string' }, keep: { type: 'string' },
    },
  });
  const quick = !!values.quick;
  const [memoryBytes, diskBytes] = (values.guest ?? (quick ? '256MiB:288MiB' : '1GiB:1152MiB')).split(':').map((s) => parseSize(s) ?? fail(`bad --guest ${values.guest}`));
  if (!diskBytes) throw new Error('--guest is MEM:DISK, e.g. 1GiB:1152MiB');
  const bandwidth = parseRate(values.bandwidth!) ?? fail('bad --bandwidth');
  const storageLink = parseRate(values['storage-link']!) ?? fail('bad --storage-link');
  const repeat = quick ? 1 : Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error('--repeat must be a positive integer');
  const whyNot = netnsAvailable();
  if (whyNot) throw new Error(whyNot);
  const name = values.name ?? (quick ? 'qemu-quick' : 'qemu');
  const command = `npm run bench -- qemu ${args.join(' ')}`.trim();

  const dir = mkdtempSync(join(tmpdir(), 'lm-bq-'));
  const topology: Topology = createTopology({ migration: bandwidth, storage: storageLink }, 'lmq');
  const interrupted = () => (topology.destroy(), rmSync(dir, { recursive: true, force: true }), process.exit(130));
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const cases: Case[] = [{ name: 'shaped', bandwidth, direct: [], proxy: [], load: [] }];
  if (!values['no-unthrottled']) cases.push({ name: 'unshaped', bandwidth: 0, direct: [], proxy: [], load: [] });
  let guestInfo: Record<string, number>;
  try {
    const g = await bootGuest(dir, placeHosts(topology, values['cpu-prof']), memoryBytes, diskBytes);
    guestInfo = g.info;
    try {
      for (const c of cases) await runCase(g.guest, topology, c, { repeat, storageLink, proxyArgs: values.keep ? ['--keep', values.keep] : [] });
    } finally {
      await g.stop();
    }
  } finally {
    topology.destroy();
    rmSync(dir, { recursive: true, force: true });
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }
  report({ values, command, name, memoryBytes, diskBytes, guestInfo, cases });
}

async function bootGuest(dir: string, hosts: Hosts, memoryBytes: number, diskBytes: number) {
  const t0 = performance.now();
  progress(`guest image ${formatBytes(diskBytes)}`);
  const image = await buildGuestImage({ diskBytes });
  const storage = await startStorage(hosts, image.disk, join(dir, 'cindex'));
  progress(`booting a ${formatBytes(memoryBytes)} guest and reading its ${formatBytes(image.dataBytes)} of files`);
  const qemu = await launchQemu({
    dir, name: 'source', memoryBytes, kernel: image.kernel, initrd: image.initrd, append: kernelCommandLine(),
    disk: { uri: storage.diskUri('source'), readOnly: true }, wrap: hosts.wrap('source'),
  }).catch(async (err) => (await storage.stop(), fail((err as Error).message)));
  const stop = async () => (await qemu.kill(), await storage.stop());
  try {
    await qemu.serial.waitFor(READY_LINE, 20 * 60_000, 0);
    await setCapabilities(qemu.qmp, { events: true });
    await setParameters(qemu.qmp, { 'max-bandwidth': UNTHROTTLED, 'downtime-limit': 300 });
  } catch (err) {
    await stop();
    throw err;
  }
  const bootMs = Math.round(performance.now() - t0);
  progress(`guest warm after ${bootMs} ms`);
  const guest: Guest = { image, memoryBytes, qemu, storage, hosts, dir };
  return { guest, stop, info: { bootMs, files: image.files, dataBytes: image.dataBytes } };
}

async function runCase(g: Guest, topology: Topology, c: Case, o: { repeat: number; storageLink: number; proxyArgs: string[] }): Promise<void> {
  topology.shape({ migration: c.bandwidth, storage: o.storageLink });
  const link = c.bandwidth ? formatRate(c.bandwidth) : 'unshaped';
  for (let r = 0; r < o.repeat; r++) {
    c.load.push(loadavg()[0]);
    const ways = r % 2 ? (['proxy', 'direct'] as const) : (['direct', 'proxy'] as const);
    for (const way of ways) {
      progress(`${link} ${way} run ${r + 1}/${o.repeat} (load ${loadavg()[0].toFixed(2)})`);
      if (way === 'direct') c.direct.push(await directRun(g));
      else c.proxy.push(await proxyRun(g, o.proxyArgs));
      const f = way === 'direct' ? c.direct.at(-1)! : c.proxy.at(-1)!;
      const p = way === 'proxy' ? c.proxy.at(-1)! : null;
      progress(`  ${way}: link ${formatBytes(f.linkBytes)}, total ${f.totalMs} ms, downtime ${f.downtimeMs} ms, pause ${f.pauseMs} ms, ${f.identical && f.alive ? 'verified' : 'NOT VERIFIED'}`
        + (p ? `, pages ref/full/zero ${p.refPages}/${p.fullPages}/${p.zeroPages}` : '') + `; CPU ms ${JSON.stringify(f.cpuMs)}`);
    }
  }
}

const verifiedAll = (c: Case) => [...c.direct, ...c.proxy].every((f) => f.identical && f.alive);

function headlineOf(c: Case) {
  const pick = (fs: RunFigures[]) => ({ linkBytes: med(fs.map((f) => f.linkBytes)), totalMs: med(fs.map((f) => f.totalMs)), downtimeMs: med(fs.map((f) => f.downtimeMs)) });
  return {
    direct: pick(c.direct),
    proxy: { ...pick(c.proxy), refPages: med(c.proxy.map((f) => f.refPages)), fullPages: med(c.proxy.map((f) => f.fullPages)), zeroPages: med(c.proxy.map((f) => f.zeroPages)) },
    verified: verifiedAll(c),
  };
}

function goalsOf(cases: Case[]): Goal[] {
  const goals: Goal[] = [];
  const m = (fs: RunFigures[], k: keyof RunFigures) => med(fs.map((f) => f[k] as number));
  const ratio = (c: Case, k: keyof RunFigures) => Math.round((m(c.proxy, k) / m(c.direct, k)) * 1000) / 1000;
  const shaped = cases.find((c) => c.name === 'shaped')!;
  goals.push({ what: 'shaped: proxy link bytes / direct', value: ratio(shaped, 'linkBytes'), goal: 0.25, met: ratio(shaped, 'linkBytes') <= 0.25 });
  goals.push({ what: 'shaped: proxy total time / direct', value: ratio(shaped, 'totalMs'), goal: 0.6, met: ratio(shaped, 'totalMs') <= 0.6 });
  const dd = m(shaped.proxy, 'downtimeMs') - m(shaped.direct, 'downtimeMs');
  goals.push({ what: 'shaped: proxy downtime - direct (ms)', value: dd, goal: 50, met: dd <= 50 });
  const dp = m(shaped.proxy, 'pauseMs') - m(shaped.direct, 'pauseMs');
  goals.push({ what: 'shaped: proxy pause - direct (ms), as the destination sees it', value: dp, goal: 50, met: dp <= 50 });
  const unshaped = cases.find((c) => c.name === 'unshaped');
  if (unshaped) goals.push({ what: 'unshaped: proxy total time / direct', value: ratio(unshaped, 'totalMs'), goal: 1.25, met: ratio(unshaped, 'totalMs') <= 1.25 });
  return goals;
}

/** Median CPU seconds of all processes, and of each (source QEMU, proxies, storage, destination QEMU). */
function cpuCell(fs: RunFigures[]): string {
  const keys = Object.keys(fs[0].cpuMs);
  const each = keys.map((k) => `${k} ${(med(fs.map((f) => f.cpuMs[k])) / 1000).toFixed(1)}`);
  const all = med(fs.map((f) => Object.values(f.cpuMs).reduce((a, b) => a + b, 0))) / 1000;
  return `${all.toFixed(1)} (${each.join(', ')})`;
}

function caseRows(c: Case): (string | number)[][] {
  const row = (way: string, fs: RunFigures[]) => {
    const m = (k: keyof RunFigures) => med(fs.map((f) => f[k] as number));
    const range = (k: keyof RunFigures) => (fs.length > 1 ? ` (${Math.min(...fs.map((f) => f[k] as number))}–${Math.max(...fs.map((f) => f[k] as number))})` : '');
    const pages = way === 'proxy' ? (fs as ProxyFigures[]).map((f) => `${f.refPages}/${f.fullPages}/${f.zeroPages}`)[0] : '';
    return [c.bandwidth ? formatRate(c.bandwidth) : 'unshaped', way, formatBytes(m('linkBytes')), `${m('totalMs')}${range('totalMs')}`, `${m('downtimeMs')}${range('downtimeMs')}`,
      `${m('pauseMs')}${range('pauseMs')}`, pages, cpuCell(fs), fs.every((f) => f.identical && f.alive) ? 'yes' : 'NO'];
  };
  return [row('direct', c.direct), row('proxy', c.proxy)];
}

function report(o: { values: { json?: boolean; out?: string }; command: string; name: string; memoryBytes: number; diskBytes: number; guestInfo: Record<string, number>; cases: Case[] }): void {
  const headline = headlineOf(o.cases[0]);
  const goals = goalsOf(o.cases);
  const load = o.cases.flatMap((c) => c.load);
  const header = ['link', 'way', 'link bytes', 'total ms', 'QEMU downtime ms', 'pause ms', 'pages ref/full/zero', 'CPU s', 'verified'];
  const runs = table(header, o.cases.flatMap(caseRows));
  const goalTable = table(['goal', 'value', 'limit', 'met'], goals.map((g) => [g.what, g.value, g.goal, g.met ? 'yes' : 'NO']));
  const path = saveResult(o.name, o.command, { guest: { memoryBytes: o.memoryBytes, diskBytes: o.diskBytes, ...o.guestInfo }, headline, goals, loadAverage: load, cases: o.cases }, o.values.out ?? RESULTS_DIR);
  const md = [
    `# ${o.name}: stock QEMU, direct vs livemig qemu-proxy`, '',
    `Command: \`${o.command}\`  `, `Date: ${new Date().toISOString()}; 1-minute load average before each pair: ${load.map((l) => l.toFixed(2)).join(', ')} (2 cores)  `,
    `Guest: ${formatBytes(o.memoryBytes)} RAM, ${formatBytes(o.diskBytes)} disk with ${formatBytes(o.guestInfo.dataBytes)} of files read once (warm), idle at migration time`, '',
    'Medians (min–max). total: source MIGRATION setup to destination MIGRATION completed (QMP timestamps); QEMU downtime: query-migrate at the source; pause: source STOP to destination completed. Link bytes: the veth between source and destination, both ways.', '',
    runs, '', goalTable, '', `Raw figures: ${path.split('/').pop()}`, '',
  ].join('\n');
  writeFileSync(path.replace(/\.json$/, '.md'), md);
  console.log(runs);
  console.log(`\n${goalTable}\n\nreport: ${path.replace(/\.json$/, '.md')}\nraw figures: ${path}`);
  if (o.values.json) console.log(JSON.stringify(headline));
}
