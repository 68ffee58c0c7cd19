/**
 * The content-index filter's rules, each against livemig's real NBD server (in
 * process, Unix socket) and its real client, so requests really are in flight
 * together: reads record, writes replace, trims and zero-writes drop, races record
 * nothing wrong, and the index survives a clean restart only on an unchanged image.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { NbdServer, NbdClient, FileExport, MemoryExport, type ExportBackend } from '../../nbd/index.ts';
import { ContentIndex } from '../../src/storage/content-index/content-index.ts';
import { BLOCK_SIZE } from '../../src/storage/content-index/fast-hash.ts';
import { tempDir } from '../helpers/processes.ts';

const dir = tempDir();
after(() => dir.cleanup());
const B = BLOCK_SIZE;
let serial = 0;

async function serve(backend: ExportBackend, opts: { capacity?: number; imagePath?: string; path?: string } = {}) {
  const index = await ContentIndex.open(backend, { path: opts.path ?? join(dir.path, `i${++serial}.cindex.sqlite`), exportName: 'd', capacity: opts.capacity, imagePath: opts.imagePath });
  const server = new NbdServer([{ name: 'd', backend: index.filter }]);
  await server.listen({ transport: 'unix', path: join(dir.path, `s${serial}.sock`) });
  const client = await NbdClient.connect(server.uri('d'));
  /** The block the index gives for these bytes, or -1. */
  const find = (bytes: Uint8Array) => {
    index.hasher.hash(bytes);
    return index.lookup(index.hasher.hi, index.hasher.lo);
  };
  const close = async () => {
    await client.close();
    await server.close();
    await index.close();
    await backend.close();
  };
  return { index, client, find, close };
}

const random = (n: number) => randomFillSync(Buffer.alloc(n));

test('a read records each whole aligned block it covers, and nothing for partial or zero blocks', async () => {
  const mem = new MemoryExport(64 * B);
  const content = random(64 * B);
  content.fill(0, 10 * B, 11 * B); // block 10 is zero
  await mem.write(content, 0);
  const { index, client, find, close } = await serve(mem);
  await client.read(2 * B + 100, 4 * B); // whole blocks 3, 4, 5; partial 2 and 6
  assert.deepEqual([3, 4, 5].map((b) => find(content.subarray(b * B, (b + 1) * B))), [3, 4, 5]);
  assert.equal(find(content.subarray(2 * B, 3 * B)), -1);
  assert.equal(find(content.subarray(6 * B, 7 * B)), -1);
  await client.read(9 * B, 3 * B);
  assert.equal(index.table.hashOfBlock(10), null, 'a zero block is not indexed');
  assert.equal(index.table.size, 5);
  assert.equal(index.table.count('recordedByRead'), 5);
  await close();
});

test('a completed write of whole blocks replaces their entries; a partial write drops the entry', async () => {
  const mem = new MemoryExport(64 * B);
  const old = random(8 * B);
  await mem.write(old, 0);
  const { index, client, find, close } = await serve(mem);
  await client.read(0, 8 * B);
  const fresh = random(2 * B);
  await client.write(2 * B, fresh);
  assert.equal(find(old.subarray(2 * B, 3 * B)), -1, 'the old content of block 2 must be gone');
  assert.equal(find(old.subarray(3 * B, 4 * B)), -1);
  assert.equal(find(fresh.subarray(0, B)), 2, 'the written content is indexed');
  assert.equal(find(fresh.subarray(B)), 3);
  await client.write(5 * B + 17, Buffer.from('x'));
  assert.equal(index.table.hashOfBlock(5), null, 'a partial write leaves the block unindexed');
  assert.equal(find(old.subarray(4 * B, 5 * B)), 4, 'untouched neighbours keep their entries');
  assert.equal(index.table.count('recordedByWrite'), 2);
  await close();
});

test('a re-read of an indexed block is not hashed again; after a write through the server it is', async () => {
  const mem = new MemoryExport(16 * B);
  const content = random(4 * B);
  await mem.write(content, 0);
  const { index, client, find, close } = await serve(mem);
  await client.read(0, 4 * B);
  await client.read(0, 4 * B);
  assert.equal(index.table.count('recordedByRead'), 4);
  assert.equal(index.table.count('rereads'), 4, 'the second read hashed nothing');
  const fresh = random(B);
  await client.write(B, fresh);
  await client.read(0, 4 * B);
  assert.equal(find(fresh), 1, 'the written block holds its new content');
  assert.equal(find(content.subarray(B, 2 * B)), -1);
  assert.equal(index.table.count('recordedByWrite'), 1);
  assert.equal(index.table.count('rereads'), 8, 'the write recorded block 1 anew, so the third read hashed nothing either');
  await close();
});

test('trim and write-zeroes drop the entries of every block they touch', async () => {
  const mem = new MemoryExport(64 * B);
  await mem.write(random(16 * B), 0);
  const { index, client, close } = await serve(mem);
  await client.read(0, 16 * B);
  assert.equal(index.table.size, 16);
  await client.trim(2 * B, 2 * B);
  await client.writeZeroes(6 * B + 1, B); // touches blocks 6 and 7
  await client.writeZeroes(10 * B, 3 * B, { noHole: true });
  for (const b of [2, 3, 6, 7, 10, 11, 12]) assert.equal(index.table.hashOfBlock(b), null, `block ${b}`);
  assert.equal(index.table.size, 9);
  await client.read(0, 16 * B);
  assert.equal(index.table.size, 11, 'reading back indexes the partly zeroed blocks 6 and 7, and no zero block');
  assert.equal(index.table.count('droppedByWrite'), 7);
  await close();
});

/** A memory export whose read of `heldAt` copies its bytes, then waits for the test. */
class HeldRead extends MemoryExport {
  heldAt = -1;
  reached!: () => void;
  readonly atGate = new Promise<void>((r) => (this.reached = r));
  release!: () => void;
  private readonly gate = new Promise<void>((r) => (this.release = r));
  override async read(target: Buffer, offset: number): Promise<void> {
    await super.read(target, offset);
    if (offset === this.heldAt) {
      this.reached();
      await this.gate;
    }
  }
}

test('a read that returns old bytes after a write of its block completed records nothing', async () => {
  const mem = new HeldRead(64 * B);
  const old = random(B);
  await mem.write(old, 8 * B);
  const { index, client, find, close } = await serve(mem);
  mem.heldAt = 8 * B;
  const read = client.read(8 * B, B); // copies the old bytes, then waits
  await mem.atGate;
  const fresh = random(B);
  await client.write(8 * B, fresh); // completes while the read is in flight
  assert.equal(find(fresh), 8);
  mem.release();
  assert.ok((await read).equals(old), 'the read did see the old bytes');
  assert.equal(find(old), -1, 'the old content must not come back');
  assert.equal(find(fresh), 8);
  assert.equal(index.table.count('raced'), 1);
  await close();
});

/** A memory export whose write at `heldAt` waits for the test before it lands. */
class HeldWrite extends MemoryExport {
  heldAt = -1;
  reached!: () => void;
  readonly atGate = new Promise<void>((r) => (this.reached = r));
  release!: () => void;
  private readonly gate = new Promise<void>((r) => (this.release = r));
  override async write(data: Buffer, offset: number): Promise<void> {
    if (offset === this.heldAt) {
      this.reached();
      await this.gate;
    }
    await super.write(data, offset);
  }
}

test('a read completing while a write of its block is in flight records nothing; the write records its content', async () => {
  const mem = new HeldWrite(64 * B);
  const old = random(B);
  await mem.write(old, 3 * B);
  const { client, find, close } = await serve(mem);
  await client.read(3 * B, B);
  assert.equal(find(old), 3);
  mem.heldAt = 3 * B;
  const fresh = random(B);
  const write = client.write(3 * B, fresh);
  await mem.atGate;
  assert.equal(find(old), -1, 'the entry is dropped when the write starts');
  assert.ok((await client.read(3 * B, B)).equals(old), 'the read saw the old bytes');
  assert.equal(find(old), -1, 'and did not record them');
  mem.release();
  await write;
  assert.equal(find(fresh), 3);
  await close();
});

test('two writes of one block in flight together record neither', async () => {
  const mem = new HeldWrite(64 * B);
  const { index, client, find, close } = await serve(mem);
  mem.heldAt = 4 * B;
  const first = random(B);
  const second = random(B);
  const w1 = client.write(4 * B, first);
  await mem.atGate;
  await client.write(4 * B - 512, Buffer.concat([Buffer.alloc(512), second])); // overlaps block 4, lands first
  mem.release();
  await w1;
  assert.equal(find(first), -1);
  assert.equal(find(second.subarray(0, B - 512)), -1);
  assert.equal(index.table.hashOfBlock(4), null);
  await close();
});

test('after random concurrent reads, writes, trims and zero-writes, every entry matches its block', async () => {
  const blocks = 256;
  const image = join(dir.path, 'random-ops.img');
  writeFileSync(image, random(blocks * B));
  const file = await FileExport.open(image); // real I/O in the thread pool: requests overlap for real
  const { index, client, close } = await serve(file, { capacity: 200 });
  let seed = 42;
  const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
  const ops: Promise<unknown>[] = [];
  for (let i = 0; i < 2000; i++) {
    const offset = rand(blocks - 8) * B + (rand(4) === 0 ? rand(B) : 0);
    const length = (1 + rand(6)) * B - (rand(4) === 0 ? rand(B - 1) : 0);
    const kind = rand(10);
    if (kind < 5) ops.push(client.read(offset, length));
    else if (kind < 8) ops.push(client.write(offset, random(length)));
    else if (kind < 9) ops.push(client.trim(offset, length));
    else ops.push(client.writeZeroes(offset, length));
    if (ops.length === 48) await Promise.all(ops.splice(0)); // many in flight, bounded
  }
  await Promise.all(ops);
  assert.ok(index.table.size <= 200);
  assert.ok(index.table.count('raced') > 0, 'the workload did race (otherwise this test proves little)');
  const disk = Buffer.alloc(blocks * B);
  await file.read(disk, 0);
  let checked = 0;
  for (let b = 0; b < blocks; b++) {
    const h = index.table.hashOfBlock(b);
    if (!h) continue;
    index.hasher.hash(disk.subarray(b * B, (b + 1) * B));
    assert.deepEqual(h, [index.hasher.hi, index.hasher.lo], `block ${b}'s entry is stale`);
    checked++;
  }
  assert.equal(checked, index.table.size);
  await close();
});

test('a clean stop on an unchanged image reloads the index; a changed image does not', async () => {
  const image = join(dir.path, 'persist.img');
  const content = random(32 * B);
  writeFileSync(image, content);
  const path = join(dir.path, 'persist.cindex.sqlite');
  const open = async () => serve(await FileExport.open(image), { path, imagePath: image });

  let s = await open();
  await s.client.read(0, 32 * B);
  await s.client.write(0, content.subarray(B, 2 * B)); // block 0 now holds block 1's bytes: the newer wins
  await s.close();

  s = await open();
  assert.equal(s.index.reloaded, 31);
  assert.equal(s.index.reloadRefused, null);
  assert.equal(s.find(content.subarray(B, 2 * B)), 0);
  assert.equal(s.find(content.subarray(5 * B, 6 * B)), 5);
  await s.client.read(0, 32 * B); // nothing new to learn
  assert.equal(s.index.table.size, 31);
  await s.close();

  appendFileSync(image, Buffer.alloc(B)); // someone else writes the image while no server runs
  s = await open();
  assert.equal(s.index.reloaded, 0);
  assert.match(s.index.reloadRefused ?? '', /image changed/);
  assert.equal(s.find(content.subarray(5 * B, 6 * B)), -1);
  await s.close();
});
