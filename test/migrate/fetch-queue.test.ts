/**
 * The fetch queue on its own (src/migrate/fetch-queue.ts), over real storage: a
 * disk image behind `livemig nbd serve`, or behind nbdkit with its pause filter
 * (reads held in flight until the test lets them go) or its error filter; keyed
 * hashes on a real HashPool. The target is a small one of the test's own that
 * records what the queue applied, refused and asked for again.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { FetchQueue, FETCH_DEFAULTS, type FetchOptions, type FetchTarget } from '../../src/migrate/fetch-queue.ts';
import { HashPool } from '../../src/migrate/hash-pool.ts';
import { NbdBackend } from '../../src/storage/nbd-backend.ts';
import { PAGE_SIZE, pageHash } from '../../src/wire/index.ts';
import { requireTools } from '../helpers/tools.ts';
import { tempDir, startNbdkit, waitFor, type Peer } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startNbdServe, type ServeProcess } from '../helpers/nbd-serve.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const image = join(dir.path, 'disk.img');
const key = randomBytes(32);
let disk: Buffer; // the image as it was made: what references are hashed from
let served: ServeProcess;
let hasher: HashPool;

before(async () => {
  randomImage(image, 16 * MiB);
  disk = readFileSync(image);
  served = await startNbdServe(['--export', `disk=${image}`]);
  hasher = new HashPool(key);
});
after(async () => {
  await served?.stop();
  await hasher?.close();
  dir.cleanup();
});

const blockBytes = (block: number, count = 1) => disk.subarray(block * PAGE_SIZE, (block + count) * PAGE_SIZE);

/** Where the queue's pages go: the newest version of each page, and what happened to them. */
class Target implements FetchTarget {
  private readonly newest = new Map<number, number>();
  readonly applied = new Map<number, { block: number; bytes: Buffer }>();
  readonly mismatches: number[][] = [];
  readonly staleBlocks = new Map<number, Buffer>();

  /** A version of the page arrived (a reference or bytes): from now on it is the one wanted. */
  version(page: number, seq: number): void {
    this.newest.set(page, seq);
  }

  isCurrent(page: number, seq: number): boolean {
    return this.newest.get(page) === seq;
  }

  apply(page: number, bytes: Uint8Array, block: number): void {
    assert.ok(!this.applied.has(page), `page ${page} applied twice`);
    this.applied.set(page, { block, bytes: Buffer.from(bytes) });
  }

  mismatched(pages: number[]): void {
    this.mismatches.push([...pages]);
  }

  stale(page: number, bytes: Uint8Array): void {
    this.staleBlocks.set(page, Buffer.from(bytes));
  }
}

/** Hands the queue a reference: pages page.. are blocks block.. (as the image was made), versions seq.. */
function addRef(q: FetchQueue, t: Target, page: number, block: number, seq: number, count = 1): void {
  for (let i = 0; i < count; i++) t.version(page + i, seq + i);
  q.add(page, block, pageHash(key, blockBytes(block, count)), seq, count);
}

function assertApplied(t: Target, page: number, block: number): void {
  const a = t.applied.get(page);
  assert.ok(a, `page ${page} applied`);
  assert.equal(a.block, block);
  assert.ok(a.bytes.equals(blockBytes(block)), `page ${page} holds block ${block}`);
}

async function withQueue(uri: string, opts: Partial<FetchOptions>, fn: (q: FetchQueue, t: Target) => Promise<void>): Promise<void> {
  const storage = await NbdBackend.open(uri);
  const t = new Target();
  try {
    await fn(new FetchQueue(storage, hasher, t, { ...FETCH_DEFAULTS, ...opts }), t);
  } finally {
    storage.client.destroy();
  }
}

/** nbdkit serving the image through its pause filter; pause() returns once every read already received is answered. */
async function pausableServer(): Promise<{ peer: Peer; pause: () => Promise<void>; resume: () => Promise<void> }> {
  const control = join(dir.path, `pause-${Math.random().toString(36).slice(2)}.sock`);
  const peer = await startNbdkit(dir.path, 'file', [image, `pause-control=${control}`], ['--filter=pause', '--readonly']);
  const command = async (c: string) => {
    const s = net.connect(control);
    await once(s, 'connect');
    s.write(c);
    const [reply] = (await once(s, 'data')) as [Buffer];
    s.destroy();
    assert.equal(reply.toString(), c.toUpperCase());
  };
  return { peer, pause: () => command('p'), resume: () => command('r') };
}

test('references resolve to their blocks: each page gets its block, checked, once', { timeout: 60_000 }, async () => {
  await withQueue(served.uri('disk'), {}, async (q, t) => {
    addRef(q, t, 0, 10, 1);
    addRef(q, t, 1, 3000, 2, 8); // a run of 8
    addRef(q, t, 50, 7, 10);
    await q.drain();
    assert.ok(q.idle);
    assert.equal(t.applied.size, 10);
    assertApplied(t, 0, 10);
    for (let i = 0; i < 8; i++) assertApplied(t, 1 + i, 3000 + i);
    assertApplied(t, 50, 7);
    assert.deepEqual(t.mismatches, []);
    assert.deepEqual({ refs: q.stats.refs, applied: q.stats.applied, stale: q.stats.stale, mismatched: q.stats.mismatched }, { refs: 10, applied: 10, stale: 0, mismatched: 0 });
  });
});

test('inOrder reads references in the order they came (a stream consumer waits on the oldest); the default reads in block order', { timeout: 60_000 }, async () => {
  for (const inOrder of [true, false]) {
    await withQueue(served.uri('disk'), { inOrder, maxInFlight: 1 }, async (q, t) => {
      for (const [page, block] of [[0, 3500], [1, 10], [2, 3501], [3, 11]]) addRef(q, t, page, block, page + 1);
      await q.drain();
      assert.deepEqual([...t.applied.keys()], inOrder ? [0, 1, 2, 3] : [1, 3, 0, 2]);
      for (const [page, block] of [[0, 3500], [1, 10], [2, 3501], [3, 11]]) assertApplied(t, page, block);
    });
  }
});

test('adjacent and near blocks are read together, far ones apart: reads follow the layout, not the reference count', { timeout: 60_000 }, async () => {
  await withQueue(served.uri('disk'), {}, async (q, t) => {
    const refs: [number, number][] = []; // [page, block]
    for (let i = 0; i < 256; i++) refs.push([i, 100 + i]); // one run of 256 adjacent blocks: one read
    for (let i = 0; i < 20; i++) refs.push([300 + i, 1000 + 10 * i]); // gaps of 9 blocks (< maxGap): one read through the gaps
    for (let i = 0; i < 10; i++) refs.push([400 + i, 2000 + 100 * i]); // gaps of 99 blocks: a read each
    // Arrival order does not matter: scrambled.
    refs.sort((a, b) => ((a[0] * 7919) % 1009) - ((b[0] * 7919) % 1009));
    refs.forEach(([page, block], i) => addRef(q, t, page, block, i + 1));
    await q.drain();
    assert.equal(t.applied.size, refs.length);
    for (const [page, block] of refs) assertApplied(t, page, block);
    assert.equal(q.stats.reads, 1 + 1 + 10);
    assert.equal(q.stats.bytesRead, (256 + 191 + 10) * PAGE_SIZE, 'the near blocks are read with the gaps between them');
  });
});

test('in-flight bounds hold: at most maxInFlight reads and maxBytesInFlight bytes outstanding', { timeout: 60_000 }, async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const server = await pausableServer();
  try {
    // Ten runs of 16 blocks, far apart: ten reads of 64 KiB.
    const load = (q: FetchQueue, target: Target) => {
      for (let r = 0; r < 10; r++) addRef(q, target, r * 16, 400 * r, r * 16 + 1, 16);
    };
    await withQueue(server.peer.uri(), { maxInFlight: 3, maxBlocks: 16, maxGap: 0 }, async (q, target) => {
      await server.pause();
      load(q, target);
      await waitFor(() => q.inFlightPages > 0, 'reads to be issued');
      assert.equal(q.inFlightPages, 3 * 16, 'three reads outstanding, held by the server');
      assert.equal(q.backlog, 7 * 16, 'the other seven wait');
      await server.resume();
      await q.drain();
      assert.equal(q.stats.maxInFlight, 3);
      assert.equal(q.stats.reads, 10);
      assert.equal(target.applied.size, 160);
    });
    await withQueue(server.peer.uri(), { maxBytesInFlight: 24 * PAGE_SIZE, maxBlocks: 16, maxGap: 0 }, async (q, target) => {
      await server.pause();
      load(q, target);
      await waitFor(() => q.inFlightPages > 0, 'reads to be issued');
      assert.ok(q.inFlightPages <= 24, `${q.inFlightPages} pages in flight, over the 24 allowed`);
      assert.equal(q.inFlightPages, 16, 'one read of 16 blocks: a second would pass the bound');
      await server.resume();
      await q.drain();
      assert.equal(target.applied.size, 160);
    });
    // A reference larger than the byte bound is still read (alone), never split and never stuck.
    await withQueue(server.peer.uri(), { maxBytesInFlight: 4 * PAGE_SIZE }, async (q, target) => {
      addRef(q, target, 0, 3700, 1, 64);
      addRef(q, target, 64, 3800, 65, 64);
      await q.drain();
      assert.equal(target.applied.size, 128);
      assert.equal(q.stats.maxInFlight, 1);
    });
  } finally {
    await server.peer.stop();
  }
});

test('a newer version of a page arriving while its block is read: the block is not applied, and stale counts it', { timeout: 60_000 }, async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const server = await pausableServer();
  try {
    await withQueue(server.peer.uri(), {}, async (q, target) => {
      await server.pause();
      addRef(q, target, 7, 500, 1);
      addRef(q, target, 8, 501, 2);
      await waitFor(() => q.inFlightPages === 2, 'the read to be issued');
      target.version(7, 3); // page 7 arrives in full, newer, while its block is on the way
      await server.resume();
      await q.drain();
      assert.equal(target.applied.has(7), false, 'the overtaken block must not land');
      assertApplied(target, 8, 501);
      assert.equal(q.stats.stale, 1);
      assert.equal(q.stats.applied, 1);
      assert.ok(target.staleBlocks.get(7)?.equals(blockBytes(500)), 'the stale block matched its hash and was shown to the target, not applied');
      assert.deepEqual(target.mismatches, []);
    });
  } finally {
    await server.peer.stop();
  }
});

test('a reference overtaken before its read is issued is dropped without reading', { timeout: 60_000 }, async () => {
  await withQueue(served.uri('disk'), {}, async (q, t) => {
    addRef(q, t, 9, 600, 1, 4);
    t.version(9, 5); // the first page of the run is overtaken...
    for (let i = 1; i < 4; i++) t.version(9 + i, 5 + i); // ...and the rest: nothing of the run is wanted
    await q.drain();
    assert.equal(q.stats.reads, 0, 'no read for a reference nobody wants');
    assert.equal(q.stats.stale, 4);
    assert.equal(t.applied.size, 0);
  });
});

test('a block written after its reference was made fails the keyed hash: the page is asked for again, nothing applied', { timeout: 60_000 }, async () => {
  const writer = await NbdBackend.open(served.uri('disk'));
  try {
    await withQueue(served.uri('disk'), {}, async (q, t) => {
      // The reference is made from the block as it was; then the guest (here, another client) writes it.
      const hash = pageHash(key, blockBytes(700));
      await writer.write(randomBytes(PAGE_SIZE), 700 * PAGE_SIZE);
      await writer.flush();
      t.version(3, 1);
      q.add(3, 700, hash, 1);
      addRef(q, t, 4, 701, 2); // its neighbour, untouched, in the same read
      await q.drain();
      assert.deepEqual(t.mismatches, [[3]]);
      assert.equal(t.applied.has(3), false);
      assertApplied(t, 4, 701);
      assert.equal(q.stats.mismatched, 1);
      assert.equal(q.stats.reads, 1);
    });
  } finally {
    await writer.write(blockBytes(700), 700 * PAGE_SIZE); // put the block back for the other tests
    await writer.close();
  }
});

test('a reference run whose check fails is asked for again whole, every page of it; a good run in the same read lands', { timeout: 60_000 }, async () => {
  const writer = await NbdBackend.open(served.uri('disk'));
  try {
    await withQueue(served.uri('disk'), {}, async (q, t) => {
      // The run's reference is made from the blocks as they were; then one bit of one of them changes.
      const hash = pageHash(key, blockBytes(800, 8));
      const changed = Buffer.from(blockBytes(803));
      changed[4000] ^= 1;
      await writer.write(changed, 803 * PAGE_SIZE);
      await writer.flush();
      for (let i = 0; i < 8; i++) t.version(20 + i, 1 + i);
      q.add(20, 800, hash, 1, 8);
      addRef(q, t, 40, 808, 100, 8); // the next 8 blocks: coalesced into the same read
      await q.drain();
      assert.deepEqual(t.mismatches.flat().sort((a, b) => a - b), [20, 21, 22, 23, 24, 25, 26, 27]);
      for (let i = 0; i < 8; i++) assert.equal(t.applied.has(20 + i), false, `page ${20 + i} of the failed run not applied`);
      for (let i = 0; i < 8; i++) assertApplied(t, 40 + i, 808 + i);
      assert.equal(q.stats.mismatched, 8);
      assert.equal(q.stats.reads, 1);
    });
  } finally {
    await writer.write(blockBytes(803), 803 * PAGE_SIZE);
    await writer.close();
  }
});

test('storage errors mid-run: the queue stops with queue.error, drain() rejects, later references are not read', { timeout: 60_000 }, async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const flag = join(dir.path, 'fail-reads');
  const server = await startNbdkit(dir.path, 'file', [image, 'error-pread-rate=100%', `error-pread-file=${flag}`], ['--filter=error', '--readonly']);
  try {
    await withQueue(server.uri(), {}, async (q, target) => {
      addRef(q, target, 0, 100, 1, 8);
      await q.drain(); // reads succeed while the flag file is absent
      assert.equal(target.applied.size, 8);
      writeFileSync(flag, ''); // from now on every read fails with EIO
      addRef(q, target, 10, 200, 20, 8);
      addRef(q, target, 30, 900, 40);
      await assert.rejects(q.drain(), (e: Error) => /read failed: EIO/.test(e.message));
      assert.ok(q.error, 'the failure is kept');
      assert.equal(target.applied.size, 8, 'nothing of the failed reads applied');
      const reads = q.stats.reads;
      addRef(q, target, 50, 300, 60);
      await assert.rejects(q.drain(), 'a stopped queue keeps failing');
      assert.equal(q.stats.reads, reads, 'and reads nothing more');
    });
  } finally {
    await server.stop();
  }
});

test('the storage server dies with reads in flight: drain() rejects instead of hanging', { timeout: 60_000 }, async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const server = await pausableServer();
  try {
    await withQueue(server.peer.uri(), {}, async (q, target) => {
      await server.pause();
      addRef(q, target, 0, 100, 1, 16);
      addRef(q, target, 100, 4000, 100);
      await waitFor(() => q.inFlightPages === 17, 'reads to be issued');
      const drained = q.drain();
      server.peer.process.kill('SIGKILL');
      await assert.rejects(drained);
      assert.ok(q.error);
      assert.equal(target.applied.size, 0);
    });
  } finally {
    await server.peer.stop();
  }
});
