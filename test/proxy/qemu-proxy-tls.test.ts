/**
 * The stream proxies under TLS (--tls-psk, --tls-creds): a source proxy with another
 * key, or another CA's certificates, fails the TLS handshake before HELLO, says so in
 * one line, and the source QEMU fails its migration and runs on; the same destination
 * proxy then carries the migration of a source proxy with the right credentials, the references'
 * keyed hashes agreeing on both ends (the key comes from the TLS session). Without
 * credentials the destination proxy listens only on loopback or a Unix socket.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pmemsave, startMigration, waitForMigration, waitForRunState } from '../../src/qemu/migration-control.ts';
import type { SourceProxyResult, DestinationProxyResult } from '../../src/proxy/index.ts';
import { livemig, tempDir } from '../helpers/processes.ts';
import { haveTool, requireTools } from '../helpers/tools.ts';
import { makePskFile, makeX509Dir } from '../helpers/tls-creds.ts';
import { bootTestGuest, QEMU_TOOLS, TEST_MEMORY, type TestGuest } from '../helpers/qemu-guest.ts';
import { failsWith, sourceFailedAndRuns, startDestination, startSource, stopAll } from '../helpers/qemu-proxy.ts';

const dir = tempDir('livemig-proxy-tls-');
let guest: TestGuest | undefined;

before(async () => {
  if (!QEMU_TOOLS.every(haveTool)) return;
  guest = await bootTestGuest(dir.path, { nbdArgs: ['--content-index', dir.path, '--content-index-listen', `unix:${join(dir.path, 'cindex.sock')}`] });
});
after(async () => {
  await guest?.stop();
  dir.cleanup();
});

test('without credentials the destination proxy refuses an address other hosts reach (MIGRATE_INSECURE); option mistakes are usage errors', async () => {
  const base = ['qemu-proxy', '--to', `unix:${join(dir.path, 'none.sock')}`, '--disk', join(dir.path, 'none.img')];
  const exposed = await livemig([...base, '--listen', 'tcp://0.0.0.0:0']);
  assert.equal(exposed.code, 1);
  assert.match(exposed.stderr, /^livemig: refusing to wait for a guest on tcp:\/\/0\.0\.0\.0:0 without TLS.*--insecure \[MIGRATE_INSECURE\]\n$/);
  const missing = await livemig([...base, '--listen', 'tcp://0.0.0.0:0', '--tls-psk', join(dir.path, 'nowhere.psk')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /nowhere\.psk.*\[MIGRATE_TLS_CONFIG\]\n$/);
  const both = await livemig([...base, '--listen', 'tcp://0.0.0.0:0', '--tls-psk', 'a', '--insecure']);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /--insecure goes without --tls-creds and --tls-psk/);
  const sourceInsecure = await livemig(['qemu-proxy', '--from', `unix:${join(dir.path, 'x.sock')}`, '--to', 'tcp://127.0.0.1:9', '--disk', 'd', '--insecure']);
  assert.equal(sourceInsecure.code, 2);
  assert.match(sourceInsecure.stderr, /--insecure is for the destination proxy/);
});

/**
 * A source proxy with the wrong credentials is dropped before HELLO (the source QEMU
 * runs on, the destination proxy waits on and says nothing); the same destination
 * proxy then carries the migration of a source proxy with the right ones, the
 * references' keyed hashes agreeing on both ends (the key comes from the TLS session).
 */
interface Intruder {
  args: string[];
  /** How the intruding source proxy fails. */
  code: string;
  message: RegExp;
}

const failedHandshake = /TLS handshake with the destination tcp:\/\/127\.0\.0\.1:\d+ failed/;

async function wrongThenRight(name: string, right: string[], intruders: Intruder[]): Promise<void> {
  const source = guest!.qemu;
  const dest = await startDestination(guest!, dir.path, name, { extra: right });
  let intruder;
  let proxy;
  try {
    for (const i of intruders) {
      intruder = await startSource(guest!, dir.path, dest.proxy, i.args);
      await startMigration(source.qmp, intruder.address);
      assert.match(await failsWith(intruder, i.code), i.message);
      await sourceFailedAndRuns(source);
      assert.equal(dest.proxy.child.exitCode, null, 'the destination proxy waits on');
      assert.equal(dest.proxy.stderr().trim().split('\n').length, 1, `the destination proxy heard nothing: ${dest.proxy.stderr()}`);
    }

    proxy = await startSource(guest!, dir.path, dest.proxy, right);
    await startMigration(source.qmp, proxy.address);
    const info = await waitForMigration(source.qmp, 180_000);
    assert.equal(info.status, 'completed', info['error-desc']);
    assert.deepEqual(await Promise.all([proxy.exited, dest.proxy.exited]), [0, 0], `${proxy.stderr()}\n${dest.proxy.stderr()}`);
    const sent = JSON.parse(proxy.stdout()) as SourceProxyResult;
    const fed = JSON.parse(dest.proxy.stdout()) as DestinationProxyResult;
    assert.ok(sent.pages.ref > 0, 'pages travelled as references');
    assert.equal(fed.refPages, sent.pages.ref);
    assert.equal(sent.refRetried, 0, "every reference passed its keyed hash: both ends hold the session's key");
    await waitForRunState(source.qmp, 'postmigrate', 10_000);
    await waitForRunState(dest.qemu.qmp, 'paused', 60_000);
    const [a, b] = [join(dir.path, `${name}-source.mem`), join(dir.path, `${name}-dest.mem`)];
    await pmemsave(source.qmp, TEST_MEMORY, a);
    await pmemsave(dest.qemu.qmp, TEST_MEMORY, b);
    assert.ok(readFileSync(a).equals(readFileSync(b)), 'source and destination memory differ');
  } finally {
    await stopAll(intruder, proxy, dest.proxy, dest.qemu);
    if ((await source.qmp.execute<{ status: string }>('query-status')).status === 'postmigrate') await source.qmp.execute('cont');
  }
}

test('PSK: a source proxy with another key is dropped before HELLO (the source QEMU runs on); the right key carries the migration', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const psk = makePskFile(join(dir.path, 'keys.psk'), { livemig: randomBytes(32) });
  const wrong = makePskFile(join(dir.path, 'wrong.psk'), { livemig: randomBytes(32) });
  await wrongThenRight('tls', ['--tls-psk', psk], [{ args: ['--tls-psk', wrong], code: 'MIGRATE_TLS', message: failedHandshake }]);
});

test('x509: a source proxy that does not trust the destination, or whose certificate another CA signed, is dropped before HELLO (the source QEMU runs on); the CA\'s client certificate carries the migration', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS, 'openssl')) return;
  const creds = makeX509Dir(join(dir.path, 'x509'));
  const stranger = makeX509Dir(join(dir.path, 'stranger'), 'stranger');
  // It trusts our CA, so only the destination proxy can refuse it: its client certificate is another CA's.
  const impostor = join(dir.path, 'impostor');
  mkdirSync(impostor);
  copyFileSync(join(creds, 'ca-cert.pem'), join(impostor, 'ca-cert.pem'));
  for (const f of ['client-cert.pem', 'client-key.pem']) copyFileSync(join(stranger, f), join(impostor, f));
  await wrongThenRight('x509', ['--tls-creds', creds], [
    { args: ['--tls-creds', stranger], code: 'MIGRATE_TLS', message: failedHandshake },
    // Under TLS 1.3 its side of the handshake completes; Node's server then checks the certificate and closes without an alert.
    { args: ['--tls-creds', impostor], code: 'MIGRATE_LINK_LOST', message: /the migration link is closed/ },
  ]);
});
