import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/guest/memory.ts';
import { regionLayout, PAGE_SIZE } from '../../src/guest/layout.ts';
import { DirtyLog } from '../../src/guest/dirty-log.ts';
import { Rng } from '../../src/util/rng.ts';

const GiB = 1024 ** 3;

test('memory is split into regions of at most 1 GiB, so 8 GiB guests work', () => {
  assert.deepEqual(regionLayout(8 * GiB).map((r) => r.pages), Array(8).fill(262144));
  assert.deepEqual(regionLayout(GiB + 8192).map((r) => [r.firstPage, r.pages]), [[0, 262144], [262144, 2]]);
  assert.throws(() => regionLayout(1000), /multiple of 4096/);
});

test('pages beyond the first region address the right bytes', () => {
  const m = GuestMemory.allocate(GiB + 2 * PAGE_SIZE);
  assert.equal(m.regions.length, 2);
  m.setPage(262145, Buffer.alloc(PAGE_SIZE, 7));
  assert.equal(m.regions[1][PAGE_SIZE], 7);
  assert.equal(m.regions[0][PAGE_SIZE], 0);
});

test('every memory write marks the dirty log and calls the write hook', () => {
  const m = GuestMemory.allocate(64 * PAGE_SIZE);
  const hooked: number[] = [];
  m.onWrite = (p) => hooked.push(p);
  m.write(3, 100, Buffer.from('x'));
  m.setPage(9, Buffer.alloc(PAGE_SIZE, 1));
  m.zeroPage(40);
  m.update(63, (v) => (v[0] = 1));
  assert.deepEqual(hooked, [3, 9, 40, 63]);
  assert.deepEqual([...m.dirty.readAndClear()], [3, 9, 40, 63]);
  assert.deepEqual([...m.dirty.readAndClear()], [], 'read-and-clear leaves nothing behind');
});

test('the dirty log is shared: a write through another view is seen, never lost across read-and-clear', () => {
  const a = GuestMemory.allocate(128 * PAGE_SIZE);
  const b = GuestMemory.fromShared(a.shared());
  b.write(5, 0, Buffer.from('hi'));
  assert.equal(a.page(5)[0], 'h'.charCodeAt(0));
  assert.deepEqual([...a.dirty.readAndClear()], [5]);
  b.write(70, 0, Buffer.from('z'));
  assert.deepEqual([...a.dirty.readAndClear()], [70]);
});

test('markAll marks exactly the pages that exist', () => {
  const d = new DirtyLog(70);
  d.markAll();
  assert.equal(d.count(), 70);
  const all = d.readAndClear();
  assert.equal(all.length, 70);
  assert.equal(all[69], 69);
});

test('isZero sees a single set bit, even the one a float view would miss', () => {
  const m = GuestMemory.allocate(4 * PAGE_SIZE);
  assert.ok(m.isZero(0));
  m.write(1, 7, Buffer.from([0x80])); // the sign bit of a float64: -0.0 === 0
  assert.equal(m.isZero(1), false);
});

test('region digests change with content, and keyed digests depend on the key', () => {
  const m = GuestMemory.allocate(8 * PAGE_SIZE);
  const before = m.regionDigest(0);
  m.write(2, 0, Buffer.from('a'));
  assert.notEqual(m.regionDigest(0), before);
  assert.notEqual(m.regionDigest(0, Buffer.alloc(16, 1)), m.regionDigest(0, Buffer.alloc(16, 2)));
});

test('the rng is deterministic per seed and resumes exactly from its saved state', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  assert.deepEqual([a.u32(), a.u32()], [b.u32(), b.u32()]);
  const saved = a.state();
  const next = [a.u32(), a.u32(), a.u32()];
  const resumed = new Rng(saved);
  assert.deepEqual([resumed.u32(), resumed.u32(), resumed.u32()], next);
  assert.notEqual(new Rng(1).u32(), new Rng(2).u32());
});
