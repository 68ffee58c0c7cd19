/**
 * NBD_OPT_STARTTLS between our client and our server: PSK and x509, the three
 * server modes, refusals that leak no export data, and failures that are one
 * clear NBD_TLS error while the server keeps serving others.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import {
  NbdClient, NbdServer, MemoryExport, NbdError, OPT, REP, loadPsk, loadX509, type TlsCredentials, type TlsMode, type NbdErrorCode,
} from '../../nbd/index.ts';
import { tempDir } from '../helpers/processes.ts';
import { haveTool, requireTools } from '../helpers/tools.ts';
import { makeX509Dir, makePskFile } from '../helpers/tls-creds.ts';
import { RawPeer, u16, u32 } from '../helpers/raw-peer.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const psk = makePskFile(join(dir.path, 'keys.psk'));
const wrongPsk = makePskFile(join(dir.path, 'wrong.psk'));
let x509 = '';
let strangerX509 = '';
const servers: NbdServer[] = [];

before(() => {
  if (!haveTool('openssl')) return;
  x509 = makeX509Dir(join(dir.path, 'x509'));
  strangerX509 = makeX509Dir(join(dir.path, 'stranger'), 'stranger');
});
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
  dir.cleanup();
});

async function serve(mode: TlsMode, credentials?: TlsCredentials, opts: { handshakeTimeoutMs?: number } = {}): Promise<{ server: NbdServer; port: number }> {
  const server = new NbdServer([{ name: 'disk', backend: new MemoryExport(4 * MiB) }], { tls: mode, tlsCredentials: credentials, ...opts });
  servers.push(server);
  const bound = await server.listen({ transport: 'tcp', host: '127.0.0.1', port: 0 });
  return { server, port: bound.transport === 'tcp' ? bound.port : 0 };
}

const isCode = (code: NbdErrorCode, message?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof NbdError, String(e));
  assert.equal(e.code, code, e.message);
  if (message) assert.match(e.message, message);
  assert.doesNotMatch(e.message, /\n/, 'one line');
  return true;
};

async function roundTrip(uri: string): Promise<void> {
  const client = await NbdClient.connect(uri);
  try {
    assert.equal(client.tls, uri.startsWith('nbds') ? 'TLSv1.3' : null);
    const data = randomFillSync(Buffer.alloc(3 * MiB + 5));
    await client.write(1000, data);
    assert.ok((await client.read(1000, data.length)).equals(data));
  } finally {
    await client.close();
  }
}

test('PSK files: IDENTITY:HEXKEY lines load; a malformed line is refused with its number', () => {
  const creds = loadPsk(psk);
  assert.equal(creds.kind, 'psk');
  assert.deepEqual(creds.kind === 'psk' && [...creds.keys.keys()], ['alice']);
  const bad = join(dir.path, 'bad.psk');
  writeFileSync(bad, `# comment\n\nbob:${randomBytes(32).toString('hex')}\ncarol:xyz\n`);
  assert.throws(() => loadPsk(bad), isCode('NBD_TLS_CONFIG', /bad\.psk line 4: expected IDENTITY:HEXKEY/));
  writeFileSync(bad, '# nothing\n');
  assert.throws(() => loadPsk(bad), isCode('NBD_TLS_CONFIG', /no keys/));
  assert.throws(() => loadPsk(join(dir.path, 'missing.psk')), isCode('NBD_TLS_CONFIG', /cannot read PSK file .*ENOENT/));
});

test('x509 directories: a missing file is named in one NBD_TLS_CONFIG error', () => {
  assert.throws(() => loadX509(dir.path, 'server'), isCode('NBD_TLS_CONFIG', /cannot read CA certificate .*ca-cert\.pem: ENOENT/));
});

test('PSK: our client and server exchange data over TLS (nbds://)', async () => {
  const { port } = await serve('require', loadPsk(psk));
  await roundTrip(`nbds://alice@127.0.0.1:${port}/disk?tls-psk-file=${encodeURIComponent(psk)}`);
  // With one identity in the file, the user part may be left out.
  await roundTrip(`nbds://127.0.0.1:${port}/disk?tls-psk-file=${encodeURIComponent(psk)}`);
});

test('x509: our client and server verify each other and exchange data over TLS', async (t) => {
  if (!requireTools(t, 'openssl')) return;
  const { port } = await serve('require', loadX509(x509, 'server'));
  await roundTrip(`nbds://127.0.0.1:${port}/disk?tls-certificates=${encodeURIComponent(x509)}`);
  // Over a Unix socket there is no host name: the chain to the CA authenticates the server.
  const unixServer = new NbdServer([{ name: 'disk', backend: new MemoryExport(4 * MiB) }], { tlsCredentials: loadX509(x509, 'server') });
  servers.push(unixServer);
  const path = join(dir.path, 'x509.sock');
  await unixServer.listen({ transport: 'unix', path });
  await roundTrip(`nbds+unix:///disk?socket=${encodeURIComponent(path)}&tls-certificates=${encodeURIComponent(x509)}`);
});

test('x509: a client certificate from another CA is refused, and so is a server certificate', async (t) => {
  if (!requireTools(t, 'openssl')) return;
  const { port } = await serve('require', loadX509(x509, 'server'));
  await assert.rejects(NbdClient.connect(`nbds://127.0.0.1:${port}/disk?tls-certificates=${encodeURIComponent(strangerX509)}`), isCode('NBD_TLS'));
  const stranger = await serve('require', loadX509(strangerX509, 'server'));
  await assert.rejects(NbdClient.connect(`nbds://127.0.0.1:${stranger.port}/disk?tls-certificates=${encodeURIComponent(x509)}`), isCode('NBD_TLS', /certificate/));
  await roundTrip(`nbds://127.0.0.1:${port}/disk?tls-certificates=${encodeURIComponent(x509)}`);
});

test('a wrong PSK fails the handshake with one NBD_TLS error, and the server goes on serving', async () => {
  const { port } = await serve('require', loadPsk(psk));
  await assert.rejects(NbdClient.connect(`nbds://alice@127.0.0.1:${port}/disk?tls-psk-file=${encodeURIComponent(wrongPsk)}`), isCode('NBD_TLS', /TLS handshake with .* failed/));
  await roundTrip(`nbds://alice@127.0.0.1:${port}/disk?tls-psk-file=${encodeURIComponent(psk)}`);
});

test('require: before STARTTLS every option is refused with NBD_REP_ERR_TLS_REQD, and no export is named or described', async () => {
  const { port } = await serve('require', loadPsk(psk));
  const peer = await RawPeer.connect(port);
  await peer.greet();
  const name = Buffer.from('disk');
  const infoData = Buffer.concat([u32(name.length), name, u16(0)]);
  for (const [opt, data] of [[OPT.LIST, Buffer.alloc(0)], [OPT.STRUCTURED_REPLY, Buffer.alloc(0)], [OPT.INFO, infoData], [OPT.GO, infoData], [0x7777, Buffer.alloc(0)]] as const) {
    peer.sendOption(opt, data);
    const r = await peer.optionReply();
    assert.equal(r.opt, opt);
    assert.equal(r.type, REP.ERR_TLS_REQD, `option ${opt}`);
    assert.doesNotMatch(r.data.toString(), /disk|4194304|memory/);
  }
  // EXPORT_NAME cannot be refused: the session ends, with no size sent.
  peer.sendOption(OPT.EXPORT_NAME, name);
  assert.equal(await peer.waitClosed(), true);
  assert.equal(peer.reader.buffered, 0);
  await assert.rejects(NbdClient.connect(`nbd://127.0.0.1:${port}/disk`), isCode('NBD_TLS', /requires TLS/));
});

test('on: plain clients and TLS clients are both served', async () => {
  const { port } = await serve('on', loadPsk(psk));
  await roundTrip(`nbd://127.0.0.1:${port}/disk`);
  await roundTrip(`nbds://alice@127.0.0.1:${port}/disk?tls-psk-file=${encodeURIComponent(psk)}`);
});

test('off: STARTTLS gets NBD_REP_ERR_POLICY, and a client that needs TLS stops with NBD_TLS', async () => {
  const { port } = await serve('off');
  const peer = await RawPeer.connect(port);
  await peer.greet();
  peer.sendOption(OPT.STARTTLS);
  assert.equal((await peer.optionReply()).type, REP.ERR_POLICY);
  peer.destroy();
  await assert.rejects(NbdClient.connect(`nbds://127.0.0.1:${port}/disk?tls-psk-file=${encodeURIComponent(psk)}`), isCode('NBD_TLS', /does not offer TLS/));
});

test('STARTTLS inside TLS gets NBD_REP_ERR_INVALID', async () => {
  const { port } = await serve('require', loadPsk(psk));
  const peer = await RawPeer.connect(port);
  await peer.greet();
  peer.sendOption(OPT.STARTTLS);
  assert.equal((await peer.optionReply()).type, REP.ACK);
  peer.reader.detach();
  const key = loadPsk(psk);
  const secure = tls.connect({
    socket: peer.socket,
    ciphers: 'PSK-AES128-GCM-SHA256',
    maxVersion: 'TLSv1.2',
    pskCallback: () => ({ psk: key.kind === 'psk' ? key.keys.get('alice')! : Buffer.alloc(0), identity: 'alice' }),
    checkServerIdentity: () => undefined,
  });
  await once(secure, 'secureConnect');
  const header = Buffer.concat([Buffer.from('IHAVEOPT'), u32(OPT.STARTTLS), u32(0)]);
  secure.write(header);
  const [reply] = (await once(secure, 'data')) as [Buffer];
  assert.equal(reply.readUInt32BE(12), REP.ERR_INVALID);
  secure.destroy();
});

test('a client that stalls in negotiation or in its TLS handshake is dropped', async () => {
  const { port } = await serve('require', loadPsk(psk), { handshakeTimeoutMs: 300 });
  const silent = await RawPeer.connect(port);
  assert.equal(await silent.waitClosed(5000), true);
  const stalled = await RawPeer.connect(port);
  await stalled.greet();
  stalled.sendOption(OPT.STARTTLS);
  assert.equal((await stalled.optionReply()).type, REP.ACK);
  assert.equal(await stalled.waitClosed(5000), true, 'a handshake that never starts is not waited for');
});
