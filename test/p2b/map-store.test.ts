import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { P2bMap, P2B } from '../../src/p2b/map.ts';
import { P2bStore, openDatabase } from '../../src/p2b/store.ts';
import { P2bReader } from '../../src/p2b/reader.ts';
import { LivemigError } from '../../src/errors.ts';
import { tempDir } from '../helpers/processes.ts';

const dir = tempDir();
after(() => dir.cleanup());
const meta = { guest: 'vm', pages: 64, pageSize: 4096, regions: [{ index: 0, firstPage: 0, pages: 64 }], storage: 'file x', storageSize: 1 << 20 };

test('a read maps a page; a memory write unmaps it', () => {
  const m = P2bMap.allocate(16);
  m.mapRead(3, 100);
  assert.equal(m.referenceable(3), true);
  assert.deepEqual(m.pagesOf(100), [3]);
  m.invalidatePage(3);
  assert.equal(m.referenceable(3), false);
  assert.deepEqual(m.pagesOf(100), []);
  assert.equal(m.count('invalidatedByMemoryWrite'), 1);
});

test('a write mapping is referenceable only after its flush', () => {
  const m = P2bMap.allocate(16);
  m.mapWrite(2, 7);
  assert.equal(m.state[2], P2B.WRITE_PENDING);
  assert.equal(m.referenceable(2), false);
  m.markFlushed(2, 7);
  assert.equal(m.referenceable(2), true);
  m.markFlushed(2, 8); // a flush for another block changes nothing
  assert.equal(m.block[2], 7);
});

test('invalidating a block drops every page mapped to it except the one kept', () => {
  const m = P2bMap.allocate(16);
  m.mapRead(1, 50);
  m.mapRead(2, 50);
  m.mapRead(3, 51);
  m.invalidateBlock(50, 2);
  assert.deepEqual([m.state[1], m.state[2], m.state[3]], [P2B.NONE, P2B.READ, P2B.READ]);
  m.invalidateBlock(50);
  assert.deepEqual(m.pagesOf(50), []);
  assert.equal(m.count('invalidatedByBlockWrite'), 2);
});

test('remapping a page moves it in the block index', () => {
  const m = P2bMap.allocate(16);
  m.mapRead(4, 10);
  m.mapRead(4, 11);
  assert.deepEqual(m.pagesOf(10), []);
  assert.deepEqual(m.pagesOf(11), [4]);
  assert.equal(m.count('invalidatedByRemap'), 1);
});

test('the index built from shared arrays matches the one kept while mutating', () => {
  const a = P2bMap.allocate(32);
  for (let p = 0; p < 32; p++) a.mapRead(p, p % 5);
  const b = P2bMap.fromShared(a.shared());
  for (let blk = 0; blk < 5; blk++) assert.deepEqual(b.pagesOf(blk).sort((x, y) => x - y), a.pagesOf(blk).sort((x, y) => x - y));
});

test('changes persist in one batch, deletions included, and reload as unverified', () => {
  const path = join(dir.path, 'a.sqlite');
  const m = P2bMap.allocate(64);
  const store = P2bStore.create(path, meta);
  m.mapRead(1, 10);
  m.mapRead(2, 20);
  m.mapWrite(3, 30);
  assert.equal(store.writeChanges(m), 3);
  assert.equal(store.writeChanges(m), 0, 'nothing changed since');
  m.invalidatePage(2);
  m.markFlushed(3, 30);
  assert.equal(store.writeChanges(m), 2);
  store.setClean(true);
  store.close();

  const r = P2bReader.open(path);
  assert.deepEqual([...r.rows()].map((x) => [x.page, x.block, x.state]), [[1, 10, P2B.READ], [3, 30, P2B.WRITE_FLUSHED]]);
  const s = r.stats();
  assert.equal(s.mappedPages, 2);
  assert.equal(s.referenceablePages, 2);
  assert.equal(s.counters.mappedByRead, 2);
  assert.equal(s.clean, true);
  r.close();

  const reopened = P2bStore.open(path);
  const fresh = P2bMap.allocate(64);
  assert.equal(reopened.loadUnverified(fresh), 2);
  assert.equal(fresh.state[1], P2B.UNVERIFIED);
  assert.equal(fresh.referenceable(1), false, 'a reloaded entry is never referenceable unverified');
  reopened.close();
});

test('a missing file, a foreign file and a foreign SQLite database are refused clearly', () => {
  assert.throws(() => openDatabase(join(dir.path, 'nope.sqlite')), (e: unknown) => e instanceof LivemigError && e.code === 'P2B_NOT_FOUND');
  const junk = join(dir.path, 'junk.bin');
  writeFileSync(junk, Buffer.alloc(8192, 0x41));
  assert.throws(() => openDatabase(junk), (e: unknown) => e instanceof LivemigError && e.code === 'P2B_FOREIGN_FILE');
  const other = join(dir.path, 'other.sqlite');
  const db = new Database(other);
  db.exec('CREATE TABLE t (x)');
  db.close();
  assert.throws(() => openDatabase(other), (e: unknown) => e instanceof LivemigError && e.code === 'P2B_FOREIGN_FILE');
  assert.throws(() => P2bStore.create(other, meta), /not a livemig p2b map/, 'create never clobbers a foreign database');
});

test('a database of another schema version is refused with both versions named', () => {
  const path = join(dir.path, 'v.sqlite');
  P2bStore.create(path, meta).close();
  const db = new Database(path);
  db.pragma('user_version = 99');
  db.close();
  assert.throws(() => openDatabase(path), (e: unknown) => e instanceof LivemigError && e.code === 'P2B_SCHEMA_VERSION' && /version 99.*version 1/.test(e.message));
});
