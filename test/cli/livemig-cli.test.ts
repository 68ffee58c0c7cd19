/** The `livemig` command as a user meets it: help, exit codes, one-line errors, nbd serve. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { livemig, run, tempDir, LIVEMIG, REPO } from '../helpers/processes.ts';
import { requireTools } from '../helpers/tools.ts';
import { makePskFile, makeX509Dir } from '../helpers/tls-creds.ts';

const dir = tempDir();
after(() => dir.cleanup());

test('--help lists the commands and exits 0', async () => {
  const r = await livemig(['--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /nbd serve/);
  assert.match(r.stdout, /Exit codes: 0 success, 1 failure at run time, 2 bad usage/);
});

test('an unknown command is a usage error: one line and a hint, exit 2', async () => {
  const r = await livemig(['frobnicate']);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split('\n')[0], 'livemig: unknown command "frobnicate"');
  assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/, 'no stack trace for a user mistake');
});

test('nbd serve rejects bad usage with exit 2', async () => {
  const cases = [
    [['nbd', 'serve'], /at least one --export/],
    [['nbd', 'serve', '--export', 'x.img', '--listen', 'bogus'], /expected tcp:\/\/HOST:PORT or unix:PATH/],
    [['nbd', 'serve', '--memory-export', 'nosize'], /needs NAME=SIZE/],
    [['nbd', 'serve', '--memory-export', 'a=lots'], /not a size/],
    [['nbd', 'serve', '--export', 'a=x.img', '--export', 'a=y.img'], /given twice/],
    [['nbd', 'serve', '--bogus'], /Unknown option '--bogus'/],
  ] as const;
  for (const [args, pattern] of cases) {
    const r = await livemig([...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
});

test('heap and page-codec options out of range are usage errors, exit 2', async () => {
  const cases = [
    [['demo', '--heap', 'zebra'], /--heap must be random or compressible/],
    [['demo', '--write-size', '8KiB'], /--write-size must be 1\.\.4096 bytes/],
    [['demo', '--compress', 'gzip'], /--compress must be auto, always, off/],
    [['demo', '--xbzrle-cache', 'lots'], /--xbzrle-cache: not a size/],
    [['migrate', '--control', 'x.sock', '--to', 'tcp://127.0.0.1:1', '--compress', 'zstd'], /--compress must be/],
    [['run', '--incoming', 'tcp://127.0.0.1:0', '--control', 'x.sock', '--heap', 'random'], /--heap comes from the source/],
  ] as const;
  for (const [args, pattern] of cases) {
    const r = await livemig([...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
});

test('nbd serve on a missing file fails at run time with one clear line, exit 1', async () => {
  const r = await livemig(['nbd', 'serve', '--export', join(dir.path, 'missing.img')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^livemig: cannot open .*missing\.img: ENOENT \[NBD_EXPORT_CONFIG\]\n$/);
});

test('nbd serve runs until SIGTERM, serves nbdinfo, and refuses a second read-write export of the file', async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const img = join(dir.path, 'served.img');
  writeFileSync(img, Buffer.alloc(1 << 20, 7));
  const child = spawn(process.execPath, [LIVEMIG, 'nbd', 'serve', '--export', `vm=${img}`, '--memory-export', 'scratch=8MiB', '--read-only',
    '--listen', 'tcp://127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const info = JSON.parse(line) as { listening: string; exports: { name: string; uri: string; readOnly: boolean; size: number }[] };
  assert.deepEqual(info.exports.map((e) => [e.name, e.readOnly, e.size]), [['vm', false, 1 << 20], ['scratch', true, 8 << 20]]);

  const ni = await run('nbdinfo', ['--json', info.exports[0].uri]);
  assert.equal(ni.code, 0, ni.stderr);
  assert.equal(JSON.parse(ni.stdout).exports[0]['export-size'], 1 << 20);

  const second = await livemig(['nbd', 'serve', '--export', img, '--listen', 'tcp://127.0.0.1:0']);
  assert.equal(second.code, 1);
  assert.match(second.stderr, /locked by another process.*\[NBD_EXPORT_LOCKED\]/);

  const ours = await livemig(['nbd', 'info', '--json', info.exports[1].uri]);
  assert.equal(ours.code, 0, ours.stderr);
  assert.equal(JSON.parse(ours.stdout).readOnly, true);

  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0);
  assert.ok(readFileSync(img).every((b) => b === 7));
});

test('nbd list shows the exports of a server', async () => {
  const child = spawn(process.execPath, [LIVEMIG, 'nbd', 'serve', '--memory-export', 'a=1MiB', '--memory-export', 'b=2MiB',
    '--listen', `unix:${join(dir.path, 'list.sock')}`, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const r = await livemig(['nbd', 'list', '--json', JSON.parse(line).listening]);
  child.kill('SIGTERM');
  await once(child, 'exit');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).map((e: { name: string }) => e.name), ['a', 'b']);
});

test('nbd info on an unreachable server: exit 1, one line with the code', async () => {
  const r = await livemig(['nbd', 'info', 'nbd://127.0.0.1:1/']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^livemig: cannot connect to nbd:\/\/127\.0\.0\.1:1\/: ECONNREFUSED \[NBD_CONNECT_FAILED\]\n$/);
});

test('demo runs a whole migration and prints the contract fields, verified by the oracle', async () => {
  const r = await livemig(['demo', '--memory', '48MiB', '--json'], { timeoutMs: 180_000 });
  assert.equal(r.code, 0, r.stderr);
  const d = JSON.parse(r.stdout);
  for (const k of ['strategy', 'workload', 'memoryBytes', 'verified', 'check', 'checkMs', 'totalTimeMs', 'downtimeMs', 'rounds', 'linkBytes', 'nasBytes', 'pages']) {
    assert.ok(k in d, `demo --json has ${k}`);
  }
  assert.deepEqual(Object.keys(d.pages).sort(), ['full', 'lz4', 'ref', 'refRetried', 'xbzrle', 'zero']);
  assert.equal(d.verified, true);
  assert.equal(d.strategy, 'auto', 'auto is the default');
  assert.ok(d.pages.ref > 0, 'references were used');
  assert.equal(d.destinationRunning, true);
  assert.equal(d.check, 'full', 'the oracle runs by default');
  assert.equal(d.oracle.equal, true);
  assert.ok(d.checkMs > 0, 'its cost is reported');
});

test('demo --check digests runs the production check only, and says so', async () => {
  const r = await livemig(['demo', '--memory', '32MiB', '--check', 'digests', '--json'], { timeoutMs: 180_000 });
  assert.equal(r.code, 0, r.stderr);
  const d = JSON.parse(r.stdout);
  assert.deepEqual([d.check, d.checkMs, d.verified, 'oracle' in d], ['digests', 0, true, false]);
  const bad = await livemig(['demo', '--check', 'maybe']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--check must be full or digests/);
});

test('demo --tls-psk and --tls-creds migrate over TLS, verified by the oracle; TLS costs under 2 % more bytes on the wire than the frames', async (t) => {
  if (!requireTools(t, 'openssl')) return;
  const psk = makePskFile(join(dir.path, 'demo.psk'));
  const x509 = makeX509Dir(join(dir.path, 'demo-x509'));
  for (const flags of [['--tls-psk', psk], ['--tls-creds', x509]]) {
    const r = await livemig(['demo', '--memory', '32MiB', '--json', ...flags], { timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout);
    assert.equal(d.verified, true, flags[0]);
    assert.equal(d.oracle.equal, true, `${flags[0]}: the oracle finds both memories equal`);
    assert.ok(d.pages.ref > 0, `${flags[0]}: references resolved with the session's key`);
    assert.ok(d.wireBytes > d.linkBytes && d.wireBytes < d.linkBytes * 1.02, `${flags[0]}: ${d.wireBytes} bytes on the wire for ${d.linkBytes} of frames`);
  }
});

test('run --incoming needs --disk (exit 2), refuses to listen in clear beyond loopback (MIGRATE_INSECURE, exit 1), and names unreadable credentials (MIGRATE_TLS_CONFIG)', async () => {
  const control = join(dir.path, 'insecure.sock');
  const noDisk = await livemig(['run', '--incoming', 'tcp://127.0.0.1:0', '--control', control]);
  assert.equal(noDisk.code, 2);
  assert.match(noDisk.stderr, /run --incoming needs --disk/);
  const exposed = await livemig(['run', '--incoming', 'tcp://0.0.0.0:0', '--control', control, '--disk', join(dir.path, 'd.img')]);
  assert.equal(exposed.code, 1);
  assert.match(exposed.stderr, /^livemig: refusing to wait for a guest on tcp:\/\/0\.0\.0\.0:0 without TLS.*--insecure \[MIGRATE_INSECURE\]\n$/);
  const missing = await livemig(['run', '--incoming', 'tcp://0.0.0.0:0', '--control', control, '--disk', join(dir.path, 'd.img'), '--tls-creds', join(dir.path, 'nowhere')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot read CA certificate .*nowhere\/ca-cert\.pem: ENOENT \[MIGRATE_TLS_CONFIG\]\n$/);
  const both = await livemig(['migrate', '--control', control, '--to', 'unix:/tmp/x.sock', '--tls-psk', 'a', '--tls-creds', 'b']);
  assert.equal(both.code, 2);
});

test('p2b is installed as a command and answers --help', async () => {
  const r = await run(process.execPath, [join(REPO, 'bin/p2b.js'), '--help']);
  assert.equal(r.code, 0);
  for (const command of ['stats', 'dump', 'lookup', 'verify', 'diff']) assert.match(r.stdout, new RegExp(`^  ${command} `, 'm'));
});

test('nbd info with a malformed URI is a usage error, exit 2', async () => {
  const r = await livemig(['nbd', 'info', 'disk.img']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^livemig: not an NBD URI: "disk.img"/);
});
