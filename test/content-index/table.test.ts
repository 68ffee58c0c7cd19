/** The content table's rules: one entry per hash and per block, drops, the cap and its clock eviction. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ContentTable } from '../../src/storage/content-index/content-table.ts';

/** Distinct pseudo-random hash halves for a key (splitmix-like, deterministic). */
const H = (k: number): [number, number] => [Math.imul(k + 1, 0x9e3779b1) >>> 0, Math.imul(k ^ 0x5bd1e995, 0x85ebca6b) >>> 0];

test('a recorded block is found by its hash and its hash by the block', () => {
  const t = new ContentTable(16);
  t.record(7, ...H(1), false);
  assert.equal(t.lookup(...H(1)), 7);
  assert.deepEqual(t.hashOfBlock(7), H(1));
  assert.equal(t.lookup(...H(2)), -1);
  assert.equal(t.count('recordedByRead'), 1);
  assert.equal(t.count('hits'), 1);
  assert.equal(t.count('lookups'), 2);
});

test('dropping a block removes its entry; new content for a block replaces the old', () => {
  const t = new ContentTable(16);
  t.record(7, ...H(1), false);
  assert.equal(t.dropBlock(7), true);
  assert.equal(t.lookup(...H(1)), -1);
  assert.equal(t.dropBlock(7), false);
  t.record(8, ...H(2), false);
  t.record(8, ...H(3), true);
  assert.equal(t.lookup(...H(2)), -1, 'the old content of block 8 is gone');
  assert.equal(t.lookup(...H(3)), 8);
  assert.equal(t.size, 1);
  assert.equal(t.count('droppedByChange'), 1);
});

test('the same content seen in a second block moves the entry to the newer block', () => {
  const t = new ContentTable(16);
  t.record(1, ...H(9), false);
  t.record(2, ...H(9), false);
  assert.equal(t.lookup(...H(9)), 2);
  assert.equal(t.hashOfBlock(1), null);
  assert.equal(t.size, 1);
});

test('the cap holds under a flood, evictions are counted, and looked-up entries outlive the rest', () => {
  const cap = 1000;
  const t = new ContentTable(cap);
  const bytes = t.bytes;
  for (let b = 0; b < cap; b++) t.record(b, ...H(b), false);
  // One sweep clears the bits set when recording; entries looked up after it are kept one more round.
  t.record(cap, ...H(cap), false);
  for (let b = 500; b < 600; b++) assert.equal(t.lookup(...H(b)), b);
  for (let b = cap + 1; b < cap + 800; b++) t.record(b, ...H(b), false);
  assert.equal(t.size, cap);
  assert.equal(t.count('evicted'), 800);
  assert.equal(t.bytes, bytes, 'memory is fixed at construction');
  for (let b = 500; b < 600; b++) assert.equal(t.lookup(...H(b)), b, `block ${b} was looked up and must survive`);
  for (let b = 0; b < 100_000; b++) t.record(cap + 1000 + b, ...H(cap + 1000 + b), false);
  assert.equal(t.size, cap);
  // Every entry left is still findable both ways (the two tables agree after many deletions).
  let found = 0;
  for (let b = 0; b < cap + 101_000; b++) {
    const h = t.hashOfBlock(b);
    if (h) {
      assert.equal(t.lookup(h[0], h[1]), b);
      found++;
    }
  }
  assert.equal(found, cap);
});

test('restored entries keep their ids and the rest of the ids are free', () => {
  const t = new ContentTable(8);
  assert.equal(t.restore(5, ...H(1), 40), true);
  assert.equal(t.restore(2, ...H(2), 41), true);
  assert.equal(t.restore(3, ...H(2), 42), false, 'a hash already present is refused');
  assert.equal(t.restore(9, ...H(3), 43), false, 'an id past the capacity is refused');
  t.finishRestore();
  assert.deepEqual(t.entry(5), [...H(1), 40]);
  for (let b = 0; b < 6; b++) t.record(100 + b, ...H(100 + b), false);
  assert.equal(t.size, 8);
  assert.equal(t.count('evicted'), 0, 'free ids are used before anything is evicted');
});

test('a capacity outside 1..2^30 is refused', () => {
  assert.throws(() => new ContentTable(0), RangeError);
  assert.throws(() => new ContentTable(2 ** 31), RangeError);
});
