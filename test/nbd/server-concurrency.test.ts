/** Many clients, pipelined requests answered out of order, and export locking. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NbdClient, NbdServer, FileExport, MemoryExport, NbdError, type ExportBackend } from '../../nbd/index.ts';
import { tempDir } from '../helpers/processes.ts';
import { startOwnServer } from '../helpers/servers.ts';
import { RawPeer } from '../helpers/raw-peer.ts';
import { CMD } from '../../nbd/constants.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
after(() => dir.cleanup());

test('sixteen clients read and write disjoint regions at once', async () => {
  const srv = await startOwnServer(dir.path, [{ name: 'm', memory: 64 * MiB }]);
  try {
    const clients = await Promise.all(Array.from({ length: 16 }, () => NbdClient.connect(srv.uri('m'))));
    assert.equal(srv.server.connections, 16);
    const data = clients.map(() => randomFillSync(Buffer.alloc(4 * MiB)));
    await Promise.all(clients.map((c, i) => c.write(i * 4 * MiB, data[i])));
    // Each client reads back another client's region.
    const back = await Promise.all(clients.map((c, i) => c.read(((i + 1) % 16) * 4 * MiB, 4 * MiB)));
    back.forEach((b, i) => assert.ok(b.equals(data[(i + 1) % 16]), `region ${(i + 1) % 16} differs`));
    await Promise.all(clients.map((c) => c.close()));
  } finally {
    await srv.close();
  }
});

/** A memory backend whose reads of offset 0 wait until the test opens the gate. */
class GatedExport extends MemoryExport implements ExportBackend {
  open!: () => void;
  private gate = new Promise<void>((r) => (this.open = r));
  override async read(target: Buffer, offset: number): Promise<void> {
    if (offset === 0) await this.gate;
    return super.read(target, offset);
  }
}

test('replies come in completion order, not request order', async () => {
  const backend = new GatedExport(MiB);
  const server = new NbdServer([{ name: '', backend }]);
  const socket = join(dir.path, 'gated.sock');
  await server.listen({ transport: 'unix', path: socket });
  try {
    const peer = await RawPeer.connect(socket);
    await peer.go('');
    peer.sendRequest(CMD.READ, 1, 0, 512); // held at the gate
    peer.sendRequest(CMD.READ, 2, 4096, 512);
    const first = await peer.simpleReply();
    assert.equal(first.handle, 2, 'the second request must not wait behind the first');
    await peer.reader.read(512);
    backend.open();
    assert.equal((await peer.simpleReply()).handle, 1);
    peer.destroy();
  } finally {
    await server.close();
  }
});

test('a file exported read-write cannot be exported again, read-only exports can share', async () => {
  const file = join(dir.path, 'locked.img');
  writeFileSync(file, Buffer.alloc(MiB));
  const rw = await FileExport.open(file);
  await assert.rejects(FileExport.open(file), (e: unknown) => e instanceof NbdError && e.code === 'NBD_EXPORT_LOCKED');
  await assert.rejects(FileExport.open(file, { readOnly: true }), (e: unknown) => e instanceof NbdError && e.code === 'NBD_EXPORT_LOCKED');
  await rw.close();
  const a = await FileExport.open(file, { readOnly: true });
  const b = await FileExport.open(file, { readOnly: true });
  await assert.rejects(FileExport.open(file), (e: unknown) => (e as NbdError).code === 'NBD_EXPORT_LOCKED');
  await a.close();
  await b.close();
});

test('a missing file is a clear configuration error', async () => {
  await assert.rejects(
    FileExport.open(join(dir.path, 'missing.img')),
    (e: unknown) => e instanceof NbdError && e.code === 'NBD_EXPORT_CONFIG' && /ENOENT/.test(e.message),
  );
});

test('TCP listening on port 0 reports the port it got', async () => {
  const server = new NbdServer([{ name: '', backend: new MemoryExport(MiB) }]);
  const bound = await server.listen({ transport: 'tcp', host: '127.0.0.1', port: 0 });
  try {
    assert.equal(bound.transport, 'tcp');
    assert.ok(bound.transport === 'tcp' && bound.port > 0);
    const c = await NbdClient.connect(server.uri(''));
    await c.write(100, Buffer.from('hello'));
    assert.equal((await c.read(100, 5)).toString(), 'hello');
    await c.close();
  } finally {
    await server.close();
  }
});
