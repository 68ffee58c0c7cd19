/**
 * docs/faults.md is the fault matrix: every row must name exactly one existing
 * test, so a renamed or deleted test fails here instead of leaving a row unproved.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readDoc, table } from '../helpers/markdown.ts';

const rows = table(readDoc('docs/faults.md'), ['#', 'fault', 'phase', 'what the user sees', 'nothing lost', 'test']);

/** The names of a test file's tests, as written (quotes unescaped). */
function testNames(path: string): string[] {
  const src = readDoc(path);
  return [...src.matchAll(/^test\((['"])((?:\\.|(?!\1).)*)\1/gm)].map((m) => m[2].replace(/\\(['"])/g, '$1'));
}

test('the fault matrix has at least 15 rows, numbered in order, each with what the user sees and how nothing is lost', () => {
  assert.ok(rows.length >= 15, `${rows.length} rows`);
  rows.forEach((r, i) => {
    assert.equal(r[0], String(i + 1));
    for (const cell of r) assert.ok(cell.length > 0, `row ${i + 1} has an empty cell`);
    assert.match(r[3], /\[[A-Z0-9_]+\]|nothing|status|runs/, `row ${i + 1} says what the user sees`);
  });
});

test('every row of the fault matrix names exactly one existing test, in test/faults or test/migrate', () => {
  for (const [n, , , , , ref] of rows) {
    const m = /^([\w-]+\.test\.ts) › (.+)$/.exec(ref);
    assert.ok(m, `row ${n}: "${ref}" is not "file › test name"`);
    const [, file, start] = m;
    const path = ['test/faults', 'test/migrate'].map((d) => `${d}/${file}`).find((p) => existsSync(new URL(`../../${p}`, import.meta.url)));
    assert.ok(path, `row ${n}: no ${file} in test/faults or test/migrate`);
    const hits = testNames(path).filter((name) => name.startsWith(start));
    assert.equal(hits.length, 1, `row ${n}: ${hits.length} tests in ${path} start with "${start}"`);
  }
});
