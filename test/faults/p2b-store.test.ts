/**
 * The p2b map's database under faults: the destination's state dir full from the
 * start or filling during the migration (a small tmpfs), and a corrupt database
 * left by an earlier run on either side. The map is a cache: none of this may
 * lose the guest.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync, openSync, writeSync, closeSync, writeFileSync, existsSync } from 'node:fs';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { migrate } from '../../src/migrate/source/index.ts';
import { LivemigError } from '../../src/errors.ts';
import { execFileSync } from 'node:child_process';
import { tempDir, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startWarmGuest, migrateGuest, listenHeld } from '../helpers/migration.ts';
import { ownDisk, assertNothingLost } from '../helpers/nothing-lost.ts';
import { startFrameTap } from '../helpers/frame-tap.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const base = join(dir.path, 'base.img');
const mounted: string[] = [];
const unmount = (path: string) => {
  if (mounted.includes(path)) execFileSync('umount', ['-l', path]) // lazily: a failed test may leave a database open there;
  mounted.splice(mounted.indexOf(path), 1);
};
before(() => randomImage(base, 64 * MiB));
after(() => {
  for (const p of [...mounted]) unmount(p); // a test that failed half-way leaves nothing mounted
  dir.cleanup();
});

const opts = { strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const };

/** A tmpfs of `bytes` (root only: CI runs as root), unmounted by the returned function. */
async function smallFs(name: string, bytes: number): Promise<{ path: string; fill: () => void; unmount: () => Promise<void> }> {
  const path = join(dir.path, name);
  mkdirSync(path);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', path]); // needs root
  mounted.push(path);
  /** Writes a filler file until the file system is full. */
  const fill = () => {
    const fd = openSync(join(path, `filler-${Date.now()}`), 'w');
    const chunk = Buffer.alloc(4096, 1);
    try {
      for (;;) writeSync(fd, chunk);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    } finally {
      closeSync(fd);
    }
  };
  return { path, fill, unmount: async () => unmount(path) };
}

/** A file that looks like an earlier run's map database and is not one: its header and pages overwritten. */
function corruptDatabase(stateDir: string): string {
  mkdirSync(stateDir, { recursive: true });
  const db = join(stateDir, 'p2b.sqlite');
  writeFileSync(db, Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(64 * 1024, 0xa5)]));
  return db;
}

test("the destination's state dir full before it starts: it refuses with P2B_WRITE, the source runs on with nothing lost", { timeout: 180_000 }, async () => {
  const fs = await smallFs('full-at-start', 256 * 1024);
  const disk = await ownDisk(dir.path, base, 'full-start');
  const g = await startWarmGuest(dir.path, 'full-start', disk.uri, 'mixed', 16 * MiB);
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: disk.uri, stateDir: () => join(fs.path, 'dst') });
  try {
    mkdirSync(join(fs.path, 'dst'));
    fs.fill();
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port }), (e: unknown) =>
      e instanceof LivemigError && e.code === 'P2B_WRITE' && /cannot create the p2b map database .*dst\/p2b\.sqlite/.test(e.message));
    await waitFor(() => incoming.state() === 'failed', 'the destination to give up');
    assert.equal((await g.status()).state, 'running');
    await assertNothingLost(g, disk, dir.path);
  } finally {
    incoming.close();
    await g.stop();
    await disk.server.stop();
    await fs.unmount();
  }
});

test("the destination's state dir fills during the migration: the guest arrives and runs anyway, the oracle finds both memories equal, and status says P2B_WRITE", { timeout: 180_000 }, async () => {
  const fs = await smallFs('full-during', 1024 * 1024);
  const disk = await ownDisk(dir.path, base, 'full-during');
  const g = await startWarmGuest(dir.path, 'full-during', disk.uri, 'mixed', 16 * MiB);
  const to = await listenHeld(dir.path, { disk: disk.uri, stateDir: () => join(fs.path, 'dst') });
  let filled = false;
  const tap = await startFrameTap(to.port, (d, name) => {
    if (d === 'toDestination' && name === 'PAGES' && !filled) (filled = true), fs.fill();
    return 'pass';
  });
  try {
    const m = await migrateGuest(dir.path, g, 'p2b', { to, via: async () => tap.port });
    assert.ok(filled);
    assert.equal(m.oracle.equal, true);
    await m.destination.pause(); // a pause writes the map: now it must have hit the full file system
    const s = await m.destination.status();
    assert.match(s.p2b.writeError ?? '', /p2b map database .* cannot be written/);
    assert.equal(m.mappedWrong, 0, 'the map in memory is right all the same');
    await m.destination.resume();
    await waitFor(async () => (await m.destination.status()).steps > 10, 'the destination to run');
    await m.destination.stop();
  } finally {
    tap.close();
    to.close();
    await g.stop();
    await disk.server.stop();
    await fs.unmount();
  }
});

test('a corrupt map database at the start, on the source and in the destination\'s state dir: each is set aside, the guests start with empty maps, and the migration completes, checked by the oracle', { timeout: 180_000 }, async () => {
  const disk = await ownDisk(dir.path, base, 'corrupt');
  corruptDatabase(join(dir.path, 'corrupt-src'));
  const g = await startWarmGuest(dir.path, 'corrupt', disk.uri, 'mixed', 16 * MiB);
  const dstDir = join(dir.path, 'corrupt-dst');
  corruptDatabase(dstDir);
  try {
    const st = await g.status();
    assert.equal(st.p2b.setAside, join(dir.path, 'corrupt-src', 'p2b.sqlite.unreadable'));
    assert.equal(st.p2b.reloadedUnverified, 0);
    const m = await migrateGuest(dir.path, g, 'p2b', { incoming: { stateDir: () => dstDir } });
    assert.equal(m.oracle.equal, true);
    assert.equal(m.mappedWrong, 0);
    assert.ok(existsSync(join(dstDir, 'p2b.sqlite.unreadable')), 'the destination set its corrupt file aside too');
    assert.ok(m.result.pages.ref > 100, 'the source mapped pages anew and sent references');
    await m.destination.stop();
  } finally {
    await g.stop();
    await disk.server.stop();
  }
});
