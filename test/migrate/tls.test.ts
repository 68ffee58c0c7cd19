/**
 * Authenticated, encrypted migration (wire/transport): with --tls-psk or
 * --tls-creds both ends agree on the key from the TLS session and a guest
 * migrates, checked by the oracle; a peer with the wrong key or CA, or none, is
 * dropped before HELLO is read, and the destination then takes a real migration.
 * Unauthenticated peers are few at a time; without credentials a destination
 * listens only where no other host reaches, unless told otherwise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { listenIncoming, type Incoming } from '../../src/migrate/destination/index.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { LivemigError } from '../../src/errors.ts';
import { CAPABILITIES, Channel, MAX_PENDING, PROTOCOL_VERSION, connectLink, loadLinkSecurity, type LinkSecurity } from '../../src/wire/index.ts';
import { tempDir, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startNbdServe, type ServeProcess } from '../helpers/nbd-serve.ts';
import { startWarmGuest, migrateGuest, listenHeld } from '../helpers/migration.ts';
import { makeX509Dir, makePskFile } from '../helpers/tls-creds.ts';
import { haveTool, requireTools } from '../helpers/tools.ts';
import { assertRunsOn } from '../helpers/outcome.ts';

const MiB = 1024 * 1024;
const GUEST = 16 * MiB;
const dir = tempDir();
const image = join(dir.path, 'disk.img');
let nbd: ServeProcess;
const creds = { x509: '', stranger: '', psk: '', otherKey: '', otherIdentity: '' };

before(async () => {
  randomImage(image, 64 * MiB);
  nbd = await startNbdServe(['--export', `disk=${image}`]);
  creds.psk = makePskFile(join(dir.path, 'keys.psk'), { alice: randomBytes(32) });
  creds.otherKey = makePskFile(join(dir.path, 'other-key.psk'), { alice: randomBytes(32) });
  creds.otherIdentity = makePskFile(join(dir.path, 'other-id.psk'), { mallory: randomBytes(32) });
  if (!haveTool('openssl')) return;
  creds.x509 = makeX509Dir(join(dir.path, 'x509'));
  creds.stranger = makeX509Dir(join(dir.path, 'stranger'), 'stranger');
});
after(async () => {
  await nbd?.stop();
  dir.cleanup();
});

const opts = { strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const };
const hasCode = (code: string, message?: RegExp) => (e: unknown) => e instanceof LivemigError && e.code === code && (!message || message.test(e.message));
const psk = (file: string) => loadLinkSecurity({ tlsPsk: file }, 'server');
const x509 = (d: string, end: 'server' | 'client') => loadLinkSecurity({ tlsCreds: d }, end);
const warmGuest = (name: string) => startWarmGuest(dir.path, name, nbd.uri('disk'), 'pagecache', GUEST);

/** A real guest migrated to `incoming` over TLS, checked by the oracle, with references. */
async function realMigration(incoming: Incoming, name: string, security: LinkSecurity | null): Promise<void> {
  const g = await warmGuest(name);
  const m = await migrateGuest(dir.path, g, 'p2b', { to: incoming, security });
  try {
    assert.equal(m.result.verified, true);
    assert.equal(m.oracle.equal, true, 'the oracle finds both memories equal');
    assert.ok(m.result.pages.ref > 0, 'references were resolved with the key both ends derived');
    assert.equal(m.mappedWrong, 0);
    if (security) assert.ok(m.result.wireBytes > m.result.linkBytes, 'TLS records cost bytes on the wire');
  } finally {
    await m.destination.stop();
  }
}

test('with a PSK both ends take the key from the TLS session: the guest migrates, verified by the oracle; a HELLO that carries a key over TLS is refused', { timeout: 180_000 }, async () => {
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), security: psk(creds.psk) });
  try {
    const link = await connectLink({ transport: 'tcp', host: '127.0.0.1', port: incoming.port }, psk(creds.psk));
    await link.channel.send({ name: 'HELLO', body: { protocol: 'livemig', versionMin: PROTOCOL_VERSION, versionMax: PROTOCOL_VERSION, capabilities: [...CAPABILITIES], key: '00'.repeat(32), strategy: 'p2b',
      guest: { name: 'k', workload: 'idle', options: {}, memoryBytes: 4096, pageSize: 4096, regions: [{ firstPage: 0, pages: 1 }] },
      storage: { spec: 'x', description: 'x', size: 0, sample: [] } } });
    await assert.rejects(link.channel.expect('WELCOME', 30_000, 'destination'), hasCode('MIGRATE_PROTOCOL', /carries a key on a TLS link/));
    link.channel.destroy();
    await waitFor(() => incoming.state() === 'failed', 'the destination to put the attempt behind it');
    await realMigration(incoming, 'psk', psk(creds.psk));
  } finally {
    incoming.close();
  }
});

test('with x509 credentials (QEMU names, both ends verified) the guest migrates, verified by the oracle', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'openssl')) return;
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), security: x509(creds.x509, 'server') });
  try {
    await realMigration(incoming, 'x509', x509(creds.x509, 'client'));
  } finally {
    incoming.close();
  }
});

test('a wrong PSK, an unknown identity, a certificate instead of a PSK, and a plain peer are dropped before HELLO; the destination then takes a real migration', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'openssl')) return;
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), security: psk(creds.psk) });
  const g = await warmGuest('wrong-psk');
  try {
    for (const [what, security] of [['another key', psk(creds.otherKey)], ['another identity', psk(creds.otherIdentity)], ['a certificate', x509(creds.x509, 'client')]] as const) {
      await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port, security }), hasCode('MIGRATE_TLS', /TLS handshake/), what);
      await assertRunsOn(g);
      assert.equal(incoming.state(), 'listening', `${what}: no HELLO was read`);
    }
    // A peer without TLS: its HELLO is not a TLS record; it hears nothing back, not even an ERROR frame.
    const plain = await Channel.connect('127.0.0.1', incoming.port);
    await plain.send({ name: 'HELLO', body: { protocol: 'livemig' } as never }).catch(() => {});
    await assert.rejects(plain.read(), hasCode('MIGRATE_LINK_LOST'));
    plain.destroy();
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port }), hasCode('MIGRATE_LINK_LOST'), 'a plain source');
    assert.equal(incoming.state(), 'listening', 'no HELLO was read from a plain peer');
    await assertRunsOn(g);
  } finally {
    await g.stop();
  }
  try {
    await realMigration(incoming, 'after-wrong-psk', psk(creds.psk));
  } finally {
    incoming.close();
  }
});

test('a certificate from another CA is refused both ways: a source with one is dropped, a destination with one is not trusted; then a real migration', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, 'openssl')) return;
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), security: x509(creds.x509, 'server') });
  const impostor = await listenHeld(dir.path, { disk: nbd.uri('disk'), security: x509(creds.stranger, 'server') });
  const g = await warmGuest('wrong-ca');
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port, security: x509(creds.stranger, 'client') }), hasCode('MIGRATE_TLS'));
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: impostor.port, security: x509(creds.x509, 'client') }), hasCode('MIGRATE_TLS', /certificate/));
    assert.equal(incoming.state(), 'listening');
    assert.equal(impostor.state(), 'listening', 'the source sent no HELLO to a destination it does not trust');
    await assertRunsOn(g);
  } finally {
    impostor.close();
    await g.stop();
  }
  try {
    await realMigration(incoming, 'after-wrong-ca', x509(creds.x509, 'client'));
  } finally {
    incoming.close();
  }
});

test(`at most ${MAX_PENDING} unauthenticated peers at once: the next is closed on arrival; once they go, a real migration`, { timeout: 180_000 }, async () => {
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), security: psk(creds.psk), helloTimeoutMs: 120_000 });
  const silent: net.Socket[] = [];
  try {
    for (let i = 0; i < MAX_PENDING; i++) {
      const s = net.connect(incoming.port, '127.0.0.1');
      await once(s, 'connect');
      silent.push(s);
    }
    const extra = net.connect(incoming.port, '127.0.0.1');
    extra.on('error', () => {});
    await once(extra, 'close'); // closed by the destination: nothing was written from this side
    // The pending ones are still open (they would be closed only by the handshake timeout).
    assert.ok(silent.every((s) => !s.destroyed && s.readyState === 'open'));
  } finally {
    for (const s of silent) s.destroy();
  }
  try {
    await realMigration(incoming, 'after-pending', psk(creds.psk));
  } finally {
    incoming.close();
  }
});

test('without credentials a destination listens only on loopback or a Unix socket (MIGRATE_INSECURE otherwise, unless insecure); a guest migrates over a Unix socket', { timeout: 180_000 }, async () => {
  const base = { port: 0, disk: nbd.uri('disk'), stateDir: () => join(dir.path, 'exposed') };
  await assert.rejects(listenIncoming({ ...base, host: '0.0.0.0' }), hasCode('MIGRATE_INSECURE', /--insecure/));
  const exposed = await listenIncoming({ ...base, host: '0.0.0.0', insecure: true });
  exposed.close();
  const withKey = await listenIncoming({ ...base, host: '0.0.0.0', security: psk(creds.psk) });
  withKey.close();
  const socketPath = join(dir.path, 'incoming.sock');
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), socketPath });
  assert.equal(incoming.address, `unix:${socketPath}`);
  const g = await warmGuest('unix');
  const m = await migrateGuest(dir.path, g, 'p2b', { to: incoming, socketPath });
  try {
    assert.equal(m.oracle.equal, true);
    assert.equal(m.result.verified, true);
    assert.ok(m.result.pages.ref > 0);
  } finally {
    await m.destination.stop();
  }
});

test('under TLS a busy destination closes a second peer at once, even one with the key; once the first goes, a real migration', { timeout: 180_000 }, async () => {
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), security: psk(creds.psk) });
  try {
    const first = await connectLink({ transport: 'tcp', host: '127.0.0.1', port: incoming.port }, psk(creds.psk));
    await waitFor(() => incoming.state() === 'handshake', 'the destination to take the first peer');
    await assert.rejects(connectLink({ transport: 'tcp', host: '127.0.0.1', port: incoming.port }, psk(creds.psk)), hasCode('MIGRATE_TLS', /closed the connection/));
    first.channel.destroy();
    await waitFor(() => incoming.state() === 'failed', 'the destination to put the first peer behind it');
    await realMigration(incoming, 'after-busy', psk(creds.psk));
  } finally {
    incoming.close();
  }
});
