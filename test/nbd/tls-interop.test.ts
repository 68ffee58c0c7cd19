/**
 * NBD over TLS with the real peers: our client against nbdkit --tls=require and
 * qemu-nbd --tls-creds (PSK and x509, client certificates verified), nbdinfo and
 * nbdcopy over nbds:// against our server, and `livemig nbd info nbds://`.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, readFileSync, openSync, ftruncateSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { NbdClient, NbdServer, FileExport, loadPsk, loadX509, type TlsCredentials } from '../../nbd/index.ts';
import { requireTools, haveTool } from '../helpers/tools.ts';
import { run, tempDir, livemig, startNbdkit, startQemuNbd, type Peer } from '../helpers/processes.ts';
import { startNbdServe, type ServeProcess } from '../helpers/nbd-serve.ts';
import { makeX509Dir, makePskFile, pskDirFor } from '../helpers/tls-creds.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const psk = makePskFile(join(dir.path, 'keys.psk'));
const wrongPsk = makePskFile(join(dir.path, 'wrong.psk'));
const pskParam = `tls-psk-file=${encodeURIComponent(psk)}`;
let x509 = '';
const peers: Peer[] = [];
const cleanups: (() => Promise<void>)[] = [];

before(() => {
  if (haveTool('openssl')) x509 = makeX509Dir(join(dir.path, 'x509'));
});
after(async () => {
  await Promise.all([...peers.map((p) => p.stop()), ...cleanups.map((c) => c())]);
  dir.cleanup();
});

function image(name: string, size: number, content?: Buffer): string {
  const path = join(dir.path, name);
  if (content) writeFileSync(path, content);
  else {
    const fd = openSync(path, 'w');
    ftruncateSync(fd, size);
    closeSync(fd);
  }
  return path;
}

/** Our client writes, flushes and reads back through `uri`. */
async function clientRoundTrip(uri: string): Promise<void> {
  const client = await NbdClient.connect(uri);
  try {
    assert.equal(client.tls, 'TLSv1.3', 'GnuTLS and Node agree on TLS 1.3, PSK included');
    const data = randomFillSync(Buffer.alloc(2 * MiB + 77));
    await client.write(4096 + 3, data);
    await client.flush();
    assert.ok((await client.read(4096 + 3, data.length)).equals(data));
  } finally {
    await client.close();
  }
}

/** Our server over TCP on 127.0.0.1 with TLS required. */
async function ourServer(credentials: TlsCredentials, file: string): Promise<number> {
  const backend = await FileExport.open(file);
  const server = new NbdServer([{ name: 'disk', backend }], { tlsCredentials: credentials });
  const bound = await server.listen({ transport: 'tcp', host: '127.0.0.1', port: 0 });
  cleanups.push(async () => {
    await server.close();
    await backend.close();
  });
  return bound.transport === 'tcp' ? bound.port : 0;
}

test('our client against nbdkit --tls=require --tls-psk', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const peer = await startNbdkit(dir.path, 'memory', ['size=16M'], ['--tls=require', `--tls-psk=${psk}`]);
  peers.push(peer);
  const unix = peer.uri().replace('nbd+unix://', 'nbds+unix://');
  await clientRoundTrip(`${unix}&${pskParam}`);
  await assert.rejects(NbdClient.connect(peer.uri()), (e: unknown) => (e as { code?: string }).code === 'NBD_TLS');
});

test('our client against nbdkit --tls=require --tls-certificates --tls-verify-peer', async (t) => {
  if (!requireTools(t, 'nbdkit', 'openssl')) return;
  const peer = await startNbdkit(dir.path, 'memory', ['size=16M'], ['--tls=require', `--tls-certificates=${x509}`, '--tls-verify-peer']);
  peers.push(peer);
  await clientRoundTrip(`${peer.uri().replace('nbd+unix://', 'nbds+unix://')}&tls-certificates=${encodeURIComponent(x509)}`);
});

test('our client against qemu-nbd --tls-creds (tls-creds-psk)', async (t) => {
  if (!requireTools(t, 'qemu-nbd')) return;
  const creds = pskDirFor(psk, join(dir.path, 'qemu-psk'));
  const peer = await startQemuNbd(dir.path, image('qemu-psk.img', 16 * MiB), ['--object', `tls-creds-psk,id=tls0,dir=${creds},endpoint=server`, '--tls-creds', 'tls0']);
  peers.push(peer);
  await clientRoundTrip(`${peer.uri().replace('nbd+unix://', 'nbds+unix://')}&${pskParam}`);
});

test('our client against qemu-nbd --tls-creds (tls-creds-x509, verify-peer=on)', async (t) => {
  if (!requireTools(t, 'qemu-nbd', 'openssl')) return;
  const file = image('qemu-x509.img', 16 * MiB);
  const peer = await startQemuNbd(dir.path, file, ['--object', `tls-creds-x509,id=tls0,dir=${x509},endpoint=server,verify-peer=on`, '--tls-creds', 'tls0']);
  peers.push(peer);
  await clientRoundTrip(`${peer.uri().replace('nbd+unix://', 'nbds+unix://')}&tls-certificates=${encodeURIComponent(x509)}`);
});

test('nbdinfo and nbdcopy over nbds:// against our server (PSK)', async (t) => {
  if (!requireTools(t, 'nbdinfo', 'nbdcopy')) return;
  const port = await ourServer(loadPsk(psk), image('ours-psk.img', 32 * MiB));
  const uri = `nbds://alice@127.0.0.1:${port}/disk?${pskParam}`;
  const info = await run('nbdinfo', ['--json', uri]);
  assert.equal(info.code, 0, info.stderr);
  assert.equal(JSON.parse(info.stdout).exports[0]['export-size'], 32 * MiB);
  assert.match(JSON.parse(info.stdout).protocol, /newstyle-fixed/);
  const src = image('copy-src.img', 0, randomFillSync(Buffer.alloc(32 * MiB)));
  const out = join(dir.path, 'copy-out.img');
  assert.equal((await run('nbdcopy', [src, uri])).code, 0);
  const back = await run('nbdcopy', [uri, out]);
  assert.equal(back.code, 0, back.stderr);
  assert.ok(readFileSync(src).equals(readFileSync(out)), 'nbdcopy over TLS did not round-trip');
  // Without TLS, nbdinfo learns nothing about the export.
  const plain = await run('nbdinfo', ['--json', `nbd://127.0.0.1:${port}/disk`]);
  assert.notEqual(plain.code, 0);
  assert.doesNotMatch(plain.stdout, /export-size/);
  const wrong = await run('nbdinfo', [`nbds://alice@127.0.0.1:${port}/disk?tls-psk-file=${encodeURIComponent(wrongPsk)}`]);
  assert.notEqual(wrong.code, 0);
});

test('nbdinfo and nbdcopy over nbds:// against our server (x509, both ends verified)', async (t) => {
  if (!requireTools(t, 'nbdinfo', 'nbdcopy', 'openssl')) return;
  const port = await ourServer(loadX509(x509, 'server'), image('ours-x509.img', 32 * MiB));
  const uri = `nbds://127.0.0.1:${port}/disk?tls-certificates=${encodeURIComponent(x509)}`;
  const info = await run('nbdinfo', ['--json', uri]);
  assert.equal(info.code, 0, info.stderr);
  assert.equal(JSON.parse(info.stdout).exports[0]['export-size'], 32 * MiB);
  const src = image('copy-src-x509.img', 0, randomFillSync(Buffer.alloc(32 * MiB)));
  const out = join(dir.path, 'copy-out-x509.img');
  assert.equal((await run('nbdcopy', [src, uri])).code, 0);
  assert.equal((await run('nbdcopy', [uri, out])).code, 0);
  assert.ok(readFileSync(src).equals(readFileSync(out)));
});

test('livemig nbd serve --tls-psk and livemig nbd info nbds://; a wrong key is one error line', async () => {
  const file = image('cli.img', 8 * MiB);
  const serve: ServeProcess = await startNbdServe(['--export', `disk=${file}`, '--tls-psk', psk]);
  cleanups.push(serve.stop);
  const listed = serve.uri('disk');
  assert.match(listed, /^nbds:\/\//, 'a TLS-only server lists nbds:// URIs');
  const info = await livemig(['nbd', 'info', '--json', `${listed}?${pskParam}`]);
  assert.equal(info.code, 0, info.stderr);
  assert.equal(JSON.parse(info.stdout).size, 8 * MiB);
  assert.equal(JSON.parse(info.stdout).tls, 'TLSv1.3');
  const wrong = await livemig(['nbd', 'info', `${listed}?tls-psk-file=${encodeURIComponent(wrongPsk)}`]);
  assert.equal(wrong.code, 1);
  assert.equal(wrong.stderr.trim().split('\n').length, 1, wrong.stderr);
  assert.match(wrong.stderr, /^livemig: TLS handshake with .* failed: .*\[NBD_TLS\]$/m);
});
