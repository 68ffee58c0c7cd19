/**
 * The interceptor's rules, one case each, against a real NBD server (ours, in
 * process, over a Unix socket) so reads and writes really are in flight together.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GuestMemory } from '../../src/guest/memory.ts';
import { PAGE_SIZE } from '../../src/guest/layout.ts';
import { P2bMap, P2B } from '../../src/p2b/map.ts';
import { Interceptor } from '../../src/storage/interceptor.ts';
import { NbdBackend } from '../../src/storage/nbd-backend.ts';
import { FileBackend } from '../../src/storage/file-backend.ts';
import { DiskLock } from '../../src/storage/disk-lock.ts';
import { tempDir } from '../helpers/processes.ts';
import { startOwnServer, type OwnServer } from '../helpers/servers.ts';

const dir = tempDir();
const diskBytes = 4 * 1024 * 1024;
const image = randomFillSync(Buffer.alloc(diskBytes));
let srv: OwnServer;
before(async () => {
  writeFileSync(join(dir.path, 'disk.img'), image);
  srv = await startOwnServer(dir.path, [{ name: 'disk', file: join(dir.path, 'disk.img') }]);
});
after(async () => {
  await srv?.close();
  dir.cleanup();
});

async function setup() {
  const memory = GuestMemory.allocate(64 * PAGE_SIZE);
  const map = P2bMap.allocate(memory.pages);
  const backend = await NbdBackend.open(srv.uri('disk'));
  const disk = new Interceptor(backend, memory, map);
  return { memory, map, disk, close: () => backend.close() };
}
const block = (b: number) => image.subarray(b * PAGE_SIZE, (b + 1) * PAGE_SIZE);

test('a completed read maps each page to its block, and the page holds the block', async () => {
  const { memory, map, disk, close } = await setup();
  await disk.readPages([5, 9, 2], 100);
  assert.deepEqual([map.block[5], map.block[9], map.block[2]], [100, 101, 102]);
  assert.ok([5, 9, 2].every((p) => map.state[p] === P2B.READ));
  assert.ok(Buffer.from(memory.page(9)).equals(block(101)));
  await close();
});

test('a memory write to a mapped page drops its mapping', async () => {
  const { memory, map, disk, close } = await setup();
  await disk.readPages([1], 10);
  memory.write(1, 17, Buffer.from([1]));
  assert.equal(map.state[1], P2B.NONE);
  await close();
});

test("writing page q to block b drops every other page's mapping to b; q is referenceable only after a flush", async () => {
  const { memory, map, disk, close } = await setup();
  await disk.readPages([1], 200);
  await disk.readPages([2], 200); // two pages hold block 200
  memory.setPage(3, Buffer.alloc(PAGE_SIZE, 0xab));
  await disk.writePages([3], 200);
  assert.equal(map.state[1], P2B.NONE);
  assert.equal(map.state[2], P2B.NONE);
  assert.equal(map.block[3], 200);
  assert.equal(map.state[3], P2B.WRITE_PENDING);
  assert.equal(map.referenceable(3), false, 'not referenceable before the write is flushed');
  await disk.flush();
  assert.equal(map.referenceable(3), true);
  await close();
});

test('a write made after a flush began is not covered by it', async () => {
  const { memory, map, disk, close } = await setup();
  memory.setPage(4, Buffer.alloc(PAGE_SIZE, 1));
  const flushing = disk.flush();
  await disk.writePages([4], 300);
  await flushing;
  assert.equal(map.referenceable(4), false);
  await disk.flush();
  assert.equal(map.referenceable(4), true);
  await close();
});

test('a read that overlaps a write of the same block is not mapped', async () => {
  const { memory, map, disk, close } = await setup();
  memory.setPage(6, Buffer.alloc(PAGE_SIZE, 0x66));
  const read = disk.readPages([7], 400); // in flight
  const write = disk.writePages([6], 400); // starts while the read is in flight
  await Promise.all([read, write]);
  assert.equal(map.state[7], P2B.NONE, 'page 7 may hold either version of block 400');
  assert.equal(map.state[6], P2B.WRITE_PENDING);
  assert.equal(disk.stats.readsRaced, 1);
  // And a read that starts while a write is in flight:
  memory.setPage(8, Buffer.alloc(PAGE_SIZE, 0x88));
  const w2 = disk.writePages([8], 401);
  const r2 = disk.readPages([9], 401);
  await Promise.all([w2, r2]);
  assert.equal(map.state[9], P2B.NONE);
  await close();
});

test('two writes to one block in flight together map neither page', async () => {
  const { memory, map, disk, close } = await setup();
  memory.setPage(10, Buffer.alloc(PAGE_SIZE, 1));
  memory.setPage(11, Buffer.alloc(PAGE_SIZE, 2));
  await Promise.all([disk.writePages([10], 500), disk.writePages([11], 500)]);
  assert.equal(map.state[10], P2B.NONE);
  assert.equal(map.state[11], P2B.NONE);
  assert.equal(disk.stats.writesRaced, 2);
  await close();
});

test('a page changed in memory while its write is in flight is not mapped', async () => {
  const { memory, map, disk, close } = await setup();
  memory.setPage(12, Buffer.alloc(PAGE_SIZE, 3));
  const w = disk.writePages([12], 600);
  memory.write(12, 0, Buffer.from([9])); // the block gets the old bytes, the page holds new ones
  await w;
  assert.equal(map.state[12], P2B.NONE);
  await close();
});

test('reads past the end of the disk are refused before any I/O', async () => {
  const { disk, close } = await setup();
  await assert.rejects(disk.readPages([0], diskBytes / PAGE_SIZE), /outside the disk/);
  await close();
});

test('the file backend locks the image: a second guest cannot open it', async () => {
  const path = join(dir.path, 'locked.img');
  writeFileSync(path, Buffer.alloc(1 << 20));
  const a = await FileBackend.open(path);
  await assert.rejects(FileBackend.open(path), (e: unknown) => (e as { code: string }).code === 'GUEST_DISK_LOCKED');
  await assert.rejects(DiskLock.take(path), (e: unknown) => (e as { code: string }).code === 'GUEST_DISK_LOCKED');
  // Inspection tools read beside it without the lock.
  const peek = await FileBackend.open(path, { readOnly: true, lock: false });
  await peek.close();
  await a.close();
  const claim = await DiskLock.take(path);
  await assert.rejects(FileBackend.open(path), /locked by another process/);
  await claim!.release();
  assert.equal(await DiskLock.take('nbd://127.0.0.1:1/x'), null, 'NBD disks are locked by their server');
});
