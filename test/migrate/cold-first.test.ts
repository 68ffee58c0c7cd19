/**
 * Round 0 sends cold pages first: the pages written while the link was set up go
 * last, their dirty bits cleared just before they go, and the digests still learn
 * of every write.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { coldFirst } from '../../src/migrate/source/precopy.ts';
import { DirtyLog } from '../../src/guest/dirty-log.ts';

test('coldFirst: every page once, the hot ones last in their order', () => {
  assert.deepEqual([...coldFirst(10, Uint32Array.of(2, 5, 9))], [0, 1, 3, 4, 6, 7, 8, 2, 5, 9]);
  assert.deepEqual([...coldFirst(4, new Uint32Array(0))], [0, 1, 2, 3]);
  const order = coldFirst(100_000, Uint32Array.from({ length: 5000 }, (_, i) => i * 20 + 7));
  assert.equal(new Set(order).size, 100_000);
});

test('DirtyLog.takePages clears only the pages named and returns those that were dirty', () => {
  const log = new DirtyLog(100);
  for (const p of [1, 31, 32, 63, 64, 99]) log.mark(p);
  assert.deepEqual([...log.takePages([31, 32, 33, 99])], [31, 32, 99]);
  assert.deepEqual([...log.readAndClear()], [1, 63, 64]);
  assert.deepEqual([...log.takePages([1, 2])], []);
});
