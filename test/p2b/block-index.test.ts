import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockIndex } from '../../src/p2b/block-index.ts';
import { Rng } from '../../src/util/rng.ts';

test('the block index agrees with a plain model under random adds and removes', () => {
  const pages = 4096;
  const idx = new BlockIndex(pages);
  const model = new Map<number, Set<number>>();
  const blockOfPage = new Int32Array(pages).fill(-1);
  const rng = new Rng(8);
  for (let i = 0; i < 200_000; i++) {
    const page = rng.int(pages);
    const old = blockOfPage[page];
    if (old >= 0) {
      idx.remove(old, page);
      model.get(old)!.delete(page);
      if (model.get(old)!.size === 0) model.delete(old);
      blockOfPage[page] = -1;
    }
    if (rng.float() < 0.7) {
      const block = rng.int(3000); // collisions and shared blocks on purpose
      idx.add(block, page);
      (model.get(block) ?? model.set(block, new Set()).get(block)!).add(page);
      blockOfPage[page] = block;
    }
  }
  assert.equal(idx.size, model.size);
  for (let b = 0; b < 3000; b++) {
    const got: number[] = [];
    idx.forEach(b, (p) => got.push(p));
    assert.deepEqual(got.sort((x, y) => x - y), [...(model.get(b) ?? [])].sort((x, y) => x - y), `block ${b}`);
  }
});
