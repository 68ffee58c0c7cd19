/**
 * A destination (`livemig run --incoming`, its own process) under a stream of
 * hostile peers: HELLOs declaring 32 TiB or 1 TiB of memory, a guest of its size
 * on another disk, malformed JSON, random frames, and under TLS peers without
 * the key. Nothing is allocated for a refused peer, so its peak RSS (VmHWM)
 * stays within a bound of what it held before; and then a real migration to it
 * succeeds, checked by the oracle.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { migrate } from '../../src/migrate/source/index.ts';
import { controlRequest } from '../../src/guest/control/client.ts';
import { compareFingerprints, type Fingerprint } from '../../src/guest/fingerprint.ts';
import { CAPABILITIES, FRAME, PROTOCOL_VERSION, connectLink, loadLinkSecurity, type LinkSecurity } from '../../src/wire/index.ts';
import { tempDir, waitFor, LIVEMIG } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startNbdServe, type ServeProcess } from '../helpers/nbd-serve.ts';
import { startWarmGuest } from '../helpers/migration.ts';
import { makePskFile } from '../helpers/tls-creds.ts';

const MiB = 1024 * 1024;
const TiB = 1024 * 1024 * MiB;
const GUEST = 32 * MiB;
/** Rounds of each kind of hostile peer. */
const ROUNDS = 20;
/** How much more than before the flood the destination may ever have held (its peak RSS). */
const RSS_SLACK = 96 * MiB;
const dir = tempDir();
const image = join(dir.path, 'disk.img');
let nbd: ServeProcess;
let pskFile = '';
let strangerPsk = '';

before(async () => {
  randomImage(image, 64 * MiB);
  nbd = await startNbdServe(['--export', `disk=${image}`]);
  pskFile = makePskFile(join(dir.path, 'keys.psk'));
  strangerPsk = makePskFile(join(dir.path, 'stranger.psk'));
});
after(async () => {
  await nbd?.stop();
  dir.cleanup();
});

/** Resident and peak resident bytes of a process (/proc/PID/status). */
function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)![1]) * 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}

interface Destination {
  child: ChildProcess;
  port: number;
  control: string;
  stderr: () => string;
}

async function startDestination(name: string, extra: string[]): Promise<Destination> {
  const control = join(dir.path, `${name}.sock`);
  const child = spawn(process.execPath, [LIVEMIG, 'run', '--incoming', 'tcp://127.0.0.1:0', '--control', control, '--disk', nbd.uri('disk'),
    '--memory', String(GUEST), '--paused', '--state-dir', join(dir.path, name), '--json', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`run --incoming exited with ${code}: ${stderr}`)));
  });
  const port = Number(new URL((JSON.parse(line) as { incoming: string }).incoming).port);
  return { child, port, control, stderr: () => stderr };
}

function frame(type: number, payload: Buffer, length = payload.length): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(type, 0);
  h.writeUInt32BE(length, 4);
  return Buffer.concat([h, payload]);
}

/** A HELLO as JSON bytes: `memoryBytes` in regions of 1 GiB, storage as the destination's disk without its content. */
function hello(memoryBytes: number): Buffer {
  const regionPages = 1 << 18;
  const pages = memoryBytes / 4096;
  const regions = Array.from({ length: Math.ceil(pages / regionPages) }, (_, i) => ({ firstPage: i * regionPages, pages: Math.min(regionPages, pages - i * regionPages) }));
  return Buffer.from(JSON.stringify({
    protocol: 'livemig', versionMin: PROTOCOL_VERSION, versionMax: PROTOCOL_VERSION, capabilities: [...CAPABILITIES], key: randomBytes(32).toString('hex'), strategy: 'p2b',
    guest: { name: 'hostile', workload: 'idle', options: {}, memoryBytes, pageSize: 4096, regions },
    storage: { spec: '/etc/passwd', description: 'not yours', size: 64 * MiB, sample: [] },
  }));
}

/** Sends `bytes` on a fresh connection and waits until the destination closes it. */
async function hostile(port: number, bytes: Buffer): Promise<void> {
  const s = net.connect(port, '127.0.0.1');
  const closed = new Promise((r) => s.once('close', r)); // once() would reject on the reset a refusal may cause
  s.on('error', () => {});
  s.on('data', () => {}); // an ERROR frame, if any
  s.write(bytes);
  await closed;
}

const PLAIN_PEERS: [string, () => Buffer][] = [
  ['a HELLO of 32 TiB', () => frame(FRAME.HELLO, hello(32 * TiB))],
  ['a HELLO of 1 TiB', () => frame(FRAME.HELLO, hello(TiB))],
  ['a HELLO of its size for another disk', () => frame(FRAME.HELLO, hello(GUEST))],
  ['malformed JSON', () => frame(FRAME.HELLO, Buffer.from('{"protocol": "livemig", "guest": {"memoryBytes": 35184372088832'))],
  ['a random frame', () => randomBytes(8 + Math.floor(Math.random() * 4096))],
];

async function realMigration(d: Destination, name: string, security: LinkSecurity | null): Promise<void> {
  const g = await startWarmGuest(dir.path, name, nbd.uri('disk'), 'pagecache', GUEST);
  try {
    const r = await migrate(g, { host: '127.0.0.1', port: d.port, strategy: 'p2b', maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle', keepPaused: true, security });
    assert.equal(r.verified, true);
    assert.ok(r.pages.ref > 0);
    const oracle = compareFingerprints(await g.fingerprint(), await controlRequest<Fingerprint>(d.control, 'fingerprint', {}, 120_000));
    assert.equal(oracle.equal, true, 'the oracle finds both memories equal');
  } finally {
    await g.stop();
  }
}

async function stop(d: Destination): Promise<void> {
  if (d.child.exitCode !== null) return;
  d.child.kill('SIGTERM');
  await once(d.child, 'exit');
}

test(`${ROUNDS} rounds of hostile peers (HELLOs of 32 TiB and 1 TiB, another disk, malformed JSON, random frames): the destination's peak RSS stays within ${RSS_SLACK / MiB} MiB of its start, then a real migration succeeds`, { timeout: 300_000 }, async (t) => {
  const d = await startDestination('plain', []);
  try {
    const before = memoryOf(d.child.pid!);
    for (let i = 0; i < ROUNDS; i++) for (const [, bytes] of PLAIN_PEERS) await hostile(d.port, bytes());
    const afterFlood = memoryOf(d.child.pid!);
    t.diagnostic(`RSS ${before.rss >> 20} MiB before, peak ${afterFlood.peak >> 20} MiB after ${ROUNDS * PLAIN_PEERS.length} hostile peers`);
    assert.ok(afterFlood.peak - before.rss < RSS_SLACK, `peak RSS ${afterFlood.peak >> 20} MiB after ${ROUNDS * PLAIN_PEERS.length} hostile peers, ${before.rss >> 20} MiB before`);
    await realMigration(d, 'after-plain-flood', null);
  } finally {
    await stop(d);
  }
});

test(`under TLS, ${ROUNDS} rounds of unauthenticated peers (another PSK, the hostile plain peers) are dropped before HELLO; peak RSS bounded, then a real migration succeeds`, { timeout: 300_000 }, async (t) => {
  const d = await startDestination('tls', ['--tls-psk', pskFile]);
  try {
    const before = memoryOf(d.child.pid!);
    const stranger = loadLinkSecurity({ tlsPsk: strangerPsk }, 'client');
    for (let i = 0; i < ROUNDS; i++) {
      await assert.rejects(connectLink({ transport: 'tcp', host: '127.0.0.1', port: d.port }, stranger));
      for (const [, bytes] of PLAIN_PEERS) await hostile(d.port, bytes());
    }
    const afterFlood = memoryOf(d.child.pid!);
    t.diagnostic(`RSS ${before.rss >> 20} MiB before, peak ${afterFlood.peak >> 20} MiB after ${ROUNDS * (PLAIN_PEERS.length + 1)} unauthenticated peers`);
    assert.ok(afterFlood.peak - before.rss < RSS_SLACK, `peak RSS ${afterFlood.peak >> 20} MiB after the flood, ${before.rss >> 20} MiB before`);
    await waitFor(async () => ((await controlRequest<{ incoming?: { phase: string } }>(d.control, 'status')).incoming?.phase === 'listening'), 'the destination to have read no HELLO');
    await realMigration(d, 'after-tls-flood', loadLinkSecurity({ tlsPsk: pskFile }, 'client'));
  } finally {
    await stop(d);
  }
});
