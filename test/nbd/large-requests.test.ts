/**
 * Requests up to 64 MiB (nbdkit's limit) are served; a larger READ or WRITE gets
 * EINVAL and the connection goes on; our client sends 50 MB whole or split at
 * what the server advertises; held request data is bounded server-wide.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, readFileSync, openSync, ftruncateSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import {
  NbdClient, NbdServer, MemoryExport, CMD, ERRNO, MAX_REQUEST, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, REPLY_TYPE,
} from '../../nbd/index.ts';
import { requireTools } from '../helpers/tools.ts';
import { tempDir, startNbdkit, startQemuNbd, type Peer } from '../helpers/processes.ts';
import { RawPeer } from '../helpers/raw-peer.ts';

const MiB = 1024 * 1024;
const MB50 = 50 * 1000 * 1000;
const dir = tempDir();
const peers: Peer[] = [];
const servers: NbdServer[] = [];
after(async () => {
  await Promise.all([...peers.map((p) => p.stop()), ...servers.map((s) => s.close())]);
  dir.cleanup();
});

/** A memory export that records the length of every read and write reaching it. */
class CountingExport extends MemoryExport {
  readonly reads: number[] = [];
  readonly writes: number[] = [];
  override async read(target: Buffer, offset: number): Promise<void> {
    this.reads.push(target.length);
    return super.read(target, offset);
  }
  override async write(data: Buffer, offset: number): Promise<void> {
    this.writes.push(data.length);
    return super.write(data, offset);
  }
}

async function ownServer(backend: MemoryExport, opts: ConstructorParameters<typeof NbdServer>[1] = {}): Promise<{ server: NbdServer; socket: string }> {
  const server = new NbdServer([{ name: '', backend }], opts);
  const socket = join(dir.path, `own-${servers.length}.sock`);
  await server.listen({ transport: 'unix', path: socket });
  servers.push(server);
  return { server, socket };
}

async function roundTrip50MB(uri: string): Promise<Buffer> {
  const data = randomFillSync(Buffer.alloc(MB50));
  const client = await NbdClient.connect(uri);
  try {
    await client.write(4096, data);
    await client.flush();
    const back = await client.read(4096, MB50);
    assert.ok(back.equals(data), '50 MB read back differs from what was written');
  } finally {
    await client.close();
  }
  return data;
}

test('our server takes a 50 MB write and read whole; our client sends them unsplit', async () => {
  const backend = new CountingExport(128 * MiB);
  const { server } = await ownServer(backend);
  const client = await NbdClient.connect(server.uri(''));
  assert.equal(client.blockSize.maximum, MAX_REQUEST);
  await client.close();
  await roundTrip50MB(server.uri(''));
  assert.deepEqual(backend.writes, [MB50]);
  assert.deepEqual(backend.reads, [MB50]);
});

test('our client splits a 50 MB write at the maximum the server advertises', async () => {
  const backend = new CountingExport(128 * MiB);
  const { server } = await ownServer(backend, { maxRequest: MiB });
  await roundTrip50MB(server.uri(''));
  assert.equal(backend.writes.length, Math.ceil(MB50 / MiB));
  assert.ok(backend.writes.every((n) => n <= MiB));
});

for (const structured of [false, true]) {
  test(`our server answers a READ and a WRITE over 64 MiB with EINVAL and keeps the connection (${structured ? 'structured' : 'simple'} replies)`, async () => {
    const { socket } = await ownServer(new MemoryExport(256 * MiB));
    const peer = await RawPeer.connect(socket);
    try {
      await peer.go('', structured);
      peer.sendRequest(CMD.READ, 1, 0, MAX_REQUEST + 1);
      if (structured) {
        const h = await peer.reader.read(20);
        assert.equal(h.readUInt32BE(0), STRUCTURED_REPLY_MAGIC);
        assert.equal(h.readUInt16BE(6), REPLY_TYPE.ERROR);
        const body = await peer.reader.read(h.readUInt32BE(16));
        assert.equal(body.readUInt32BE(0), ERRNO.EINVAL);
        assert.match(body.toString('utf8', 6, 6 + body.readUInt16BE(4)), /exceeds the maximum of 67108864/);
      } else {
        assert.deepEqual(await peer.simpleReply(), { magic: SIMPLE_REPLY_MAGIC, errno: ERRNO.EINVAL, handle: 1 });
      }
      // The payload of a refused write is read and dropped, so the stream stays in sync.
      peer.sendRequest(CMD.WRITE, 2, 0, MAX_REQUEST + 1, 0, Buffer.alloc(MAX_REQUEST + 1, 0xee));
      assert.deepEqual(await peer.simpleReply(), { magic: SIMPLE_REPLY_MAGIC, errno: ERRNO.EINVAL, handle: 2 });
      // Exactly 64 MiB is served, and the refused write left nothing behind.
      peer.sendRequest(CMD.WRITE, 3, MiB, MAX_REQUEST, 0, Buffer.alloc(MAX_REQUEST, 0x11));
      assert.deepEqual(await peer.simpleReply(), { magic: SIMPLE_REPLY_MAGIC, errno: 0, handle: 3 });
      peer.sendRequest(CMD.READ, 4, 0, MAX_REQUEST);
      let data: Buffer;
      if (structured) {
        const h = await peer.reader.read(28);
        assert.equal(h.readUInt16BE(6), REPLY_TYPE.OFFSET_DATA);
        assert.equal(h.readUInt32BE(16), MAX_REQUEST + 8);
        data = await peer.reader.read(MAX_REQUEST);
      } else {
        assert.deepEqual(await peer.simpleReply(), { magic: SIMPLE_REPLY_MAGIC, errno: 0, handle: 4 });
        data = await peer.reader.read(MAX_REQUEST);
      }
      assert.ok(data.subarray(0, MiB).every((b) => b === 0), 'the refused write reached the export');
      assert.ok(data.subarray(MiB).every((b) => b === 0x11));
    } finally {
      peer.destroy();
    }
  });
}

test('request data held at once stays within maxBufferedBytes while clients do not read their replies', async () => {
  const limit = 8 * MiB;
  const { server, socket } = await ownServer(new MemoryExport(64 * MiB), { maxRequest: 4 * MiB, maxBufferedBytes: limit });
  const clients = await Promise.all(Array.from({ length: 4 }, () => RawPeer.connect(socket)));
  for (const c of clients) {
    await c.go('');
    c.socket.pause(); // read nothing: replies pile up on the server's side
    for (let i = 0; i < 8; i++) c.sendRequest(CMD.READ, i, i * 4 * MiB, 4 * MiB);
  }
  // Wait until the server has granted all it may, then a while longer for any overshoot to show.
  const deadline = Date.now() + 10_000;
  while (server.bufferedBytes.now < limit && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.bufferedBytes.now, limit);
  // Every client reads again (together: the budget one holds may be what another waits for).
  await Promise.all(clients.map(async (c) => {
    c.socket.resume();
    for (let i = 0; i < 8; i++) {
      const r = await c.simpleReply();
      assert.equal(r.errno, 0);
      await c.reader.skip(4 * MiB);
    }
    c.destroy();
  }));
  assert.ok(server.bufferedBytes.peak <= limit, `peak ${server.bufferedBytes.peak} over the limit ${limit}`);
});

test('our client round-trips 50 MB through nbdkit file (split at the 32 MiB default)', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const file = join(dir.path, 'nbdkit.img');
  const fd = openSync(file, 'w');
  ftruncateSync(fd, 64 * MiB);
  closeSync(fd);
  const peer = await startNbdkit(dir.path, 'file', [file]);
  peers.push(peer);
  const data = await roundTrip50MB(peer.uri());
  assert.ok(readFileSync(file).subarray(4096, 4096 + MB50).equals(data), 'file behind nbdkit differs');
});

test('our client round-trips 50 MB through qemu-nbd (split at its 32 MiB maximum)', async (t) => {
  if (!requireTools(t, 'qemu-nbd')) return;
  const file = join(dir.path, 'qemu.img');
  writeFileSync(file, Buffer.alloc(0));
  const fd = openSync(file, 'r+');
  ftruncateSync(fd, 64 * MiB);
  closeSync(fd);
  const peer = await startQemuNbd(dir.path, file);
  peers.push(peer);
  const client = await NbdClient.connect(peer.uri());
  assert.equal(client.blockSize.maximum, 32 * MiB);
  await client.close();
  const data = await roundTrip50MB(peer.uri());
  assert.ok(readFileSync(file).subarray(4096, 4096 + MB50).equals(data), 'file behind qemu-nbd differs');
});
