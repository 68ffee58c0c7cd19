/** Keyed hashing on the pool (plain-JS workers) and the memory digests verification rests on. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { GuestMemory } from '../../src/guest/memory.ts';
import { PAGE_SIZE } from '../../src/guest/layout.ts';
import { HashPool } from '../../src/migrate/hash-pool.ts';
import { MemoryDigests } from '../../src/migrate/memory-digests.ts';
import { pageHash, DIGEST_CHUNK_PAGES } from '../../src/wire/index.ts';

const key = randomBytes(32);

/** The definition, computed the slow and obvious way. */
function expected(memory: GuestMemory): string[] {
  return memory.layout.map((r) => {
    const h = createHmac('sha256', key);
    for (let p = r.firstPage; p < r.firstPage + r.pages; p += DIGEST_CHUNK_PAGES) {
      const n = Math.min(DIGEST_CHUNK_PAGES, r.firstPage + r.pages - p);
      const first = memory.page(p);
      h.update(createHmac('sha256', key).update(new Uint8Array(first.buffer, first.byteOffset, n * PAGE_SIZE)).digest());
    }
    return h.digest('hex');
  });
}

test('the hash workers agree with pageHash, for pages and runs, in both regions of a guest over 1 GiB', async () => {
  const memory = GuestMemory.allocate(1024 * 1024 * 1024 + 64 * 1024); // sparse: only written pages cost
  const pages = [0, 5, 262143, 262144, 262159];
  for (const p of pages) memory.setPage(p, randomBytes(PAGE_SIZE));
  const pool = new HashPool(key, memory.shared());
  try {
    const hashes = await pool.hashMemory(Uint32Array.from(pages.flatMap((p) => [p, 1])));
    pages.forEach((p, i) => assert.deepEqual(Buffer.from(hashes.subarray(i * 16, i * 16 + 16)), pageHash(key, memory.page(p)), `page ${p}`));
    // A run is one hash over its pages, as a REF_RUN carries it.
    const run = await pool.hashMemory(Uint32Array.from([262144, 16]));
    const first = memory.page(262144);
    assert.deepEqual(Buffer.from(run), pageHash(key, new Uint8Array(first.buffer, first.byteOffset, 16 * PAGE_SIZE)));
    const buf = randomBytes(3 * PAGE_SIZE);
    const copy = Buffer.from(buf);
    const { buffer, hashes: h2 } = await pool.hashBuffer(buf, Uint32Array.from([0, 1, 1, 1, 2, 1, 0, 3]));
    assert.deepEqual(buffer, copy, 'the buffer comes back intact');
    for (let i = 0; i < 3; i++) assert.deepEqual(Buffer.from(h2.subarray(i * 16, i * 16 + 16)), pageHash(key, copy.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)));
    assert.deepEqual(Buffer.from(h2.subarray(48, 64)), pageHash(key, copy));
    // A pooled buffer is a view at the start of a larger ArrayBuffer it owns: it moves whole, keeps its length.
    const big = Buffer.allocUnsafeSlow(8 * PAGE_SIZE);
    randomBytes(2 * PAGE_SIZE).copy(big);
    const view = big.subarray(0, 2 * PAGE_SIZE);
    const expectedView = Buffer.from(view);
    const moved = await pool.hashBuffer(view, Uint32Array.from([1, 1]), true);
    assert.equal(moved.buffer.length, 2 * PAGE_SIZE);
    assert.deepEqual(moved.buffer, expectedView);
    assert.deepEqual(Buffer.from(moved.hashes), pageHash(key, expectedView.subarray(PAGE_SIZE)));
  } finally {
    await pool.close();
  }
});

test('memory digests match their definition, including a short last chunk, and zeroed memory needs no pass', async () => {
  const memory = GuestMemory.allocate((3 * DIGEST_CHUNK_PAGES + 5) * PAGE_SIZE);
  const pool = new HashPool(key, memory.shared());
  try {
    const zero = new MemoryDigests(pool, memory.pages, key, true);
    assert.equal(zero.staleChunks, 0);
    assert.deepEqual(zero.regionDigests(memory.layout), expected(memory));
    for (let p = 0; p < memory.pages; p += 7) memory.setPage(p, randomBytes(PAGE_SIZE));
    const d = new MemoryDigests(pool, memory.pages, key);
    assert.throws(() => d.regionDigests(memory.layout), /not settled/);
    await d.settle();
    assert.deepEqual(d.regionDigests(memory.layout), expected(memory));
  } finally {
    await pool.close();
  }
});

test('a write is caught once the dirty log reports it, even in the middle of a pass', async () => {
  const memory = GuestMemory.allocate(64 * DIGEST_CHUNK_PAGES * PAGE_SIZE);
  const pool = new HashPool(key, memory.shared());
  try {
    for (let p = 0; p < memory.pages; p++) memory.setPage(p, randomBytes(PAGE_SIZE));
    const d = new MemoryDigests(pool, memory.pages, key);
    memory.dirty.readAndClear();
    await d.settle();
    const before = d.regionDigests(memory.layout);

    memory.setPage(100, randomBytes(PAGE_SIZE));
    assert.deepEqual(d.regionDigests(memory.layout), before, 'unseen, the write changes nothing: the log is what tells');
    d.invalidate(memory.dirty.readAndClear());
    assert.equal(d.staleChunks, 1);

    // Writes land and are reported while a pass runs over other stale chunks.
    for (let p = 0; p < memory.pages; p += 3 * DIGEST_CHUNK_PAGES) memory.setPage(p, randomBytes(PAGE_SIZE));
    d.invalidate(memory.dirty.readAndClear());
    const pass = d.refresh();
    memory.setPage(5, randomBytes(PAGE_SIZE));
    memory.setPage(memory.pages - 1, randomBytes(PAGE_SIZE));
    d.invalidate(memory.dirty.readAndClear());
    await pass;
    await d.settle();
    assert.notDeepEqual(d.regionDigests(memory.layout), before);
    assert.deepEqual(d.regionDigests(memory.layout), expected(memory));
  } finally {
    await pool.close();
  }
});

test('a job the hashing thread cannot do fails its promise instead of hanging', async () => {
  const pool = new HashPool(null); // no key yet: a job now is a mistake, and must say so
  try {
    await assert.rejects(pool.hashBuffer(Buffer.alloc(PAGE_SIZE), Uint32Array.from([0, 1])));
  } finally {
    await pool.close();
  }
});
