/** fio with its `nbd` engine (libnbd) as an independent client: random 4 KiB I/O against an NBD URI. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';

export interface FioJob {
  /** randread, randwrite or randrw */
  rw: 'randread' | 'randwrite' | 'randrw';
  /** Share of reads in randrw, in percent. */
  readPercent?: number;
  jobs: number;
  iodepth: number;
  blockSize: number;
  /** Bytes of the export each job addresses. */
  size: number;
  seconds: number;
}

export interface FioResult {
  readIops: number;
  writeIops: number;
  /** Mean completion latency in microseconds (reads, or writes if there were none). */
  meanLatencyUs: number;
}

export async function runFio(uri: string, job: FioJob): Promise<FioResult> {
  const args = [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${job.rw}`, `--bs=${job.blockSize}`,
    `--iodepth=${job.iodepth}`, `--numjobs=${job.jobs}`, `--size=${job.size}`, '--time_based', `--runtime=${job.seconds}`,
    '--group_reporting', '--output-format=json', '--randrepeat=0',
    ...(job.rw === 'randrw' ? [`--rwmixread=${job.readPercent ?? 50}`] : []),
  ];
  const p = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (err += d));
  const [code] = (await once(p, 'exit')) as [number];
  if (code !== 0) throw new Error(`fio ${job.rw} on ${uri} failed: ${err.trim() || out.trim()}`);
  // The nbd engine prints "fio: connected to NBD server" lines before the JSON.
  const report = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error: number; read: Side; write: Side }[] };
  const j = report.jobs[0];
  if (j.error) throw new Error(`fio ${job.rw} on ${uri}: job error ${j.error}`);
  const side = j.read.iops > 0 ? j.read : j.write;
  return { readIops: j.read.iops, writeIops: j.write.iops, meanLatencyUs: side.clat_ns.mean / 1000 };
}

interface Side {
  iops: number;
  clat_ns: { mean: number };
}
