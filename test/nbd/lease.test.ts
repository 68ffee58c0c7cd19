/**
 * The lease option (nbd/lease.ts, docs/nbd.md): one writer per export, handed
 * over atomically. Real server, real client, real sockets; nbdkit shows that a
 * server without leases is used as before.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { NbdServer, NbdClient, MemoryExport, LEASE_OP, NbdError, ERRNO } from '../../nbd/index.ts';
import { NbdRequestError } from '../../nbd/errors.ts';
import { tempDir, startNbdkit } from '../helpers/processes.ts';
import { requireTools } from '../helpers/tools.ts';

const dir = tempDir();
let server: NbdServer;
let uri: string;
before(async () => {
  server = new NbdServer([{ name: 'disk', backend: new MemoryExport(1 << 20) }, { name: 'other', backend: new MemoryExport(1 << 20) }]);
  await server.listen({ transport: 'unix', path: join(dir.path, 'nbd.sock') });
  uri = server.uri('disk');
});
after(async () => {
  await server.close();
  dir.cleanup();
});

const page = (byte: number) => Buffer.alloc(4096, byte);
const eperm = (e: unknown) => e instanceof NbdRequestError && e.errno === ERRNO.EPERM;

test('without a lease held every client writes; once a token holds it, only that token\'s connections change the export, and everyone reads', async () => {
  const plain = await NbdClient.connect(uri);
  const a = await NbdClient.connect(uri, { leaseToken: 'guest-a' });
  const b = await NbdClient.connect(uri.replace('/disk', '/other'));
  try {
    assert.deepEqual(a.lease, { granted: true, holder: 'guest-a', epoch: 1 });
    await a.write(0, page(1));
    await assert.rejects(plain.write(4096, page(2)), eperm, 'a plain client may not write a held export');
    await assert.rejects(plain.writeZeroes(0, 4096), eperm);
    await assert.rejects(plain.trim(0, 4096), eperm);
    assert.deepEqual(await plain.read(0, 4096), page(1), 'reads stay allowed');
    await b.write(0, page(3)); // another export's lease is its own
    await assert.rejects(NbdClient.connect(uri, { leaseToken: 'guest-b' }), (e: unknown) => e instanceof NbdError && e.code === 'NBD_LEASE_HELD' && /epoch 1/.test(e.message));
    const again = await NbdClient.connect(uri, { leaseToken: 'guest-a' });
    assert.deepEqual(again.lease, { granted: true, holder: 'guest-a', epoch: 2 }, 'acquiring a lease one holds renews it');
    await again.write(8192, page(4));
    await again.close();
  } finally {
    await Promise.all([plain.close(), a.close(), b.close()]);
  }
  assert.equal((await NbdClient.leaseCall(uri, { op: LEASE_OP.RELEASE, token: 'guest-a' }))?.granted, true);
  const after = await NbdClient.connect(uri);
  await after.write(0, page(5)); // free again: plain clients write
  await after.close();
});

test('a handover is atomic on holder and epoch: a stale epoch or a wrong holder is refused and changes nothing; the old holder\'s connection then gets EPERM', async () => {
  const src = await NbdClient.connect(uri, { leaseToken: 'src' });
  const epoch = src.lease!.epoch;
  try {
    const wrongEpoch = await NbdClient.leaseCall(uri, { op: LEASE_OP.HANDOVER, token: 'src', epoch: epoch - 1, to: 'dst' });
    assert.deepEqual(wrongEpoch, { granted: false, holder: 'src', epoch });
    const wrongHolder = await NbdClient.leaseCall(uri, { op: LEASE_OP.HANDOVER, token: 'intruder', epoch, to: 'dst' });
    assert.deepEqual(wrongHolder, { granted: false, holder: 'src', epoch });
    await src.write(0, page(6));
    const moved = await NbdClient.leaseCall(uri, { op: LEASE_OP.HANDOVER, token: 'src', epoch, to: 'dst' });
    assert.deepEqual(moved, { granted: true, holder: 'dst', epoch: epoch + 1 });
    await assert.rejects(src.write(0, page(7)), eperm, 'the old holder\'s open connection lost its right to write');
    const twice = await NbdClient.leaseCall(uri, { op: LEASE_OP.HANDOVER, token: 'src', epoch, to: 'dst' });
    assert.equal(twice?.granted, false, 'the same handover cannot happen twice');
    assert.deepEqual(await NbdClient.leaseCall(uri, { op: LEASE_OP.QUERY }), { granted: true, holder: 'dst', epoch: epoch + 1 });
    const dst = await NbdClient.connect(uri, { leaseToken: 'dst' });
    assert.equal(dst.lease?.epoch, epoch + 2, 'the holder connecting renews');
    await dst.write(0, page(8));
    assert.deepEqual(await src.read(0, 4096), page(8));
    await dst.close();
    // A renewal (handover to oneself) bumps the epoch: a handover prepared at the old epoch then fails.
    const renewed = await NbdClient.leaseCall(uri, { op: LEASE_OP.HANDOVER, token: 'dst', epoch: epoch + 2, to: 'dst' });
    assert.deepEqual(renewed, { granted: true, holder: 'dst', epoch: epoch + 3 });
    assert.equal((await NbdClient.leaseCall(uri, { op: LEASE_OP.HANDOVER, token: 'dst', epoch: epoch + 2, to: 'src' }))?.granted, false);
    assert.equal((await NbdClient.leaseCall(uri, { op: LEASE_OP.RELEASE, token: 'src' }))?.granted, false, 'only the holder releases');
    assert.equal((await NbdClient.leaseCall(uri, { op: LEASE_OP.RELEASE, token: 'dst' }))?.granted, true);
  } finally {
    await src.close();
  }
});

test('a lease request for an unknown export is refused, and a server without leases answers null: its clients connect and write as before', async (t) => {
  await assert.rejects(NbdClient.leaseCall(uri.replace('/disk', '/nope'), { op: LEASE_OP.QUERY }), (e: unknown) => e instanceof NbdError && /no export named/.test(e.message));
  const noLeases = new NbdServer([{ name: 'disk', backend: new MemoryExport(1 << 20) }], { leases: false });
  await noLeases.listen({ transport: 'unix', path: join(dir.path, 'plain.sock') });
  try {
    assert.equal(await NbdClient.leaseCall(noLeases.uri('disk'), { op: LEASE_OP.QUERY }), null);
    const c = await NbdClient.connect(noLeases.uri('disk'), { leaseToken: 'x' });
    assert.equal(c.lease, null);
    await c.write(0, page(9));
    await c.close();
  } finally {
    await noLeases.close();
  }
  if (!requireTools(t, 'nbdkit')) return;
  const kit = await startNbdkit(dir.path, 'memory', ['size=1M']);
  try {
    assert.equal(await NbdClient.leaseCall(kit.uri(), { op: LEASE_OP.QUERY }), null, 'nbdkit answers the unknown option with NBD_REP_ERR_UNSUP');
    const c = await NbdClient.connect(kit.uri(), { leaseToken: 'x' });
    await c.write(0, page(10));
    await c.close();
  } finally {
    await kit.stop();
  }
});
