/**
 * `livemig run` and its control verbs, and the `p2b` tool, driven as a user
 * would: separate processes, a real NBD server, files on disk. Includes a
 * guest killed with SIGKILL and restarted on the same state dir.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { join } from 'node:path';
import { writeFileSync, copyFileSync } from 'node:fs';
import { LIVEMIG, REPO, livemig, run, tempDir, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startNbdServe, type ServeProcess } from '../helpers/nbd-serve.ts';

const MiB = 1024 * 1024;
const P2B = join(REPO, 'bin/p2b.js');
const p2b = (args: string[]) => run(process.execPath, [P2B, ...args]);
const dir = tempDir();
let nbd: ServeProcess;

before(async () => {
  randomImage(join(dir.path, 'disk.img'), 96 * MiB);
  nbd = await startNbdServe(['--export', `vm=${join(dir.path, 'disk.img')}`]);
});
after(async () => {
  await nbd?.stop();
  dir.cleanup();
});

interface GuestProcess {
  child: ChildProcess;
  control: string;
  stateDir: string;
  /** Resolves with the exit code; made at spawn time, so an early death is never missed. */
  exited: Promise<number | null>;
  stderr: () => string;
}

async function startGuest(name: string, workload = 'pagecache', stateDir = join(dir.path, name)): Promise<GuestProcess> {
  const control = join(dir.path, `${name}.sock`);
  const child = spawn(process.execPath, [LIVEMIG, 'run', '--name', name, '--memory', '24MiB', '--disk', nbd.uri('vm'), '--workload', workload,
    '--control', control, '--state-dir', stateDir, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const first = await Promise.race([
    once(createInterface({ input: child.stdout! }), 'line').then(([l]) => l as string),
    exited.then((code) => { throw new Error(`livemig run exited with ${code} before starting: ${stderr}`); }),
  ]);
  assert.equal(JSON.parse(first).control, control);
  return { child, control, stateDir, exited, stderr: () => stderr };
}

async function status(control: string) {
  const r = await livemig(['status', '--control', control, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

async function waitMapped(control: string, share: number) {
  let s = await status(control);
  await waitFor(async () => ((s = await status(control)), s.p2b.mappedPages / s.p2b.pages >= share), `the map to fill to ${share}`, 30_000);
  return s;
}

/** Waits until the guest has run `steps` more steps (a count, not a time). */
async function runSteps(control: string, steps: number): Promise<void> {
  const from = (await status(control)).steps as number;
  await waitFor(async () => (await status(control)).steps >= from + steps, `${steps} more steps`, 60_000);
}

test('run, status, throttle, pause, dump-memory, p2b verify/stats/lookup/dump/diff, resume, stop', async () => {
  const g = await startGuest('vm1');
  const s = await waitMapped(g.control, 0.5);
  assert.equal(s.name, 'vm1');
  assert.equal(s.memoryBytes, 24 * MiB);
  assert.equal(s.p2b.path, join(g.stateDir, 'p2b.sqlite'));

  const human = await livemig(['status', '--control', g.control]);
  assert.match(human.stdout, /^guest vm1: running/);
  assert.match(human.stdout, /p2b: \d+ of 6144 pages mapped/);

  assert.equal((await livemig(['throttle', '--control', g.control, '50', '--json'])).code, 0);
  assert.equal((await status(g.control)).throttle, 50);
  assert.equal((await livemig(['throttle', '--control', g.control, '150'])).code, 2);

  const paused = await livemig(['pause', '--control', g.control, '--json']);
  assert.equal(JSON.parse(paused.stdout).state, 'paused');
  const image = join(dir.path, 'vm1.mem');
  const dump = await livemig(['dump-memory', '--control', g.control, '--out', image, '--json']);
  assert.equal(dump.code, 0, dump.stderr);
  const { map } = JSON.parse(dump.stdout);
  assert.equal((await status(g.control)).state, 'paused', 'dump-memory leaves a paused guest paused');

  const v = await p2b(['verify', map, '--memory', image, '--storage', nbd.uri('vm'), '--json']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const vr = JSON.parse(v.stdout);
  assert.ok(vr.checked > 3000 && vr.mismatches === 0);
  // The same check against the file, read without the lock the server holds.
  assert.equal((await p2b(['verify', map, '--memory', image, '--storage', join(dir.path, 'disk.img')])).code, 0);

  // A corrupted image must fail the check: verify can fail.
  const bad = join(dir.path, 'vm1-bad.mem');
  copyFileSync(image, bad);
  const row = JSON.parse((await p2b(['dump', map, '--json'])).stdout.split('\n')[0]);
  const fh = await import('node:fs/promises').then((f) => f.open(bad, 'r+'));
  await fh.write(Buffer.from([0xde, 0xad]), 0, 2, row.page * 4096 + 100);
  await fh.close();
  const failed = await p2b(['verify', map, '--memory', bad, '--storage', nbd.uri('vm'), '--json']);
  assert.equal(failed.code, 1);
  assert.deepEqual(JSON.parse(failed.stdout).listed[0], { page: row.page, block: row.block, state: row.state });

  const stats = JSON.parse((await p2b(['stats', map, '--json'])).stdout);
  assert.equal(stats.pages, 6144);
  assert.equal(stats.mappedPages, vr.checked);
  assert.ok(stats.mappedShare > 0.5);
  assert.ok(stats.blocks > 0 && stats.blocks <= stats.mappedPages);
  assert.equal(stats.regions.length, 1);
  assert.ok(stats.counters.mappedByRead >= stats.mappedPages);

  const look = await p2b(['lookup', map, '--page', String(row.page), '--json']);
  assert.deepEqual(JSON.parse(look.stdout), [row]);
  const byBlock = await p2b(['lookup', map, '--block', String(row.block), '--json']);
  assert.ok(JSON.parse(byBlock.stdout).some((r: { page: number }) => r.page === row.page));
  assert.equal((await p2b(['lookup', map, '--page', '999999'])).code, 1);

  const csv = (await p2b(['dump', map])).stdout.trim().split('\n');
  assert.equal(csv[0], 'page,block,state');
  assert.equal(csv.length - 1, stats.mappedPages);

  // diff: the snapshot against itself is identical; against the live map after more work, not.
  assert.equal((await p2b(['diff', map, map])).code, 0);
  await livemig(['resume', '--control', g.control]);
  await livemig(['throttle', '--control', g.control, '0']);
  await runSteps(g.control, 300); // steady-state file reads: misses evict
  await livemig(['pause', '--control', g.control]);
  const d = await p2b(['diff', map, join(g.stateDir, 'p2b.sqlite'), '--json']);
  assert.equal(d.code, 1, 'steady-state evictions must change the map');
  const dr = JSON.parse(d.stdout);
  assert.ok(dr.onlyInFirst + dr.onlyInSecond + dr.differentBlock > 0);

  const stop = await livemig(['stop', '--control', g.control]);
  assert.equal(stop.code, 0, `stop failed: ${stop.stderr}; guest stderr: ${g.stderr()}`);
  assert.equal(await g.exited, 0, g.stderr());
  const closed = JSON.parse((await p2b(['stats', join(g.stateDir, 'p2b.sqlite'), '--json'])).stdout);
  assert.equal(closed.clean, true, 'stop flushes the map and marks it clean');
});

test('a guest killed with SIGKILL leaves a readable map; a restart reloads it as unverified, never referenceable', async () => {
  const g = await startGuest('vm2');
  await waitMapped(g.control, 0.5);
  const db = join(g.stateDir, 'p2b.sqlite');
  // Killed once the persister has written the map (it writes every 250 ms, off the guest's thread).
  await waitFor(async () => {
    const r = await p2b(['stats', db, '--json']);
    return r.code === 0 && JSON.parse(r.stdout).mappedPages > 1000;
  }, 'the persister to write the map', 30_000);
  g.child.kill('SIGKILL');
  await g.exited;
  const after = await p2b(['stats', db, '--json']);
  assert.equal(after.code, 0, after.stderr);
  const st = JSON.parse(after.stdout);
  assert.equal(st.clean, false, 'a killed guest did not close its map');
  assert.ok(st.mappedPages > 1000);

  const again = await startGuest('vm2', 'pagecache', g.stateDir);
  const s = await status(again.control);
  assert.equal(s.p2b.previousRunCrashed, true);
  assert.equal(s.p2b.reloadedUnverified, st.mappedPages);
  await livemig(['stop', '--control', again.control]);
  assert.equal(await again.exited, 0, again.stderr());
});

test('usage and run-time errors: exit 2 or 1, one line', async () => {
  const noWorkload = await livemig(['run', '--name', 'x', '--memory', '1MiB', '--disk', 'd', '--control', 'c']);
  assert.equal(noWorkload.code, 2);
  assert.match(noWorkload.stderr, /run needs --workload/);
  const badWorkload = await livemig(['run', '--name', 'x', '--memory', '1MiB', '--disk', 'd', '--control', 'c', '--workload', 'nope']);
  assert.equal(badWorkload.code, 2);
  assert.match(badWorkload.stderr, /unknown workload "nope" \(have: idle, pagecache, dirty, diskwrite, mixed\)/);
  const missingDisk = await livemig(['run', '--name', 'x', '--memory', '4MiB', '--disk', join(dir.path, 'missing.img'), '--workload', 'idle',
    '--control', join(dir.path, 'x.sock'), '--state-dir', join(dir.path, 'x')]);
  assert.equal(missingDisk.code, 1);
  assert.match(missingDisk.stderr, /^livemig: cannot open .*missing\.img: ENOENT \[GUEST_DISK_OPEN\]\n$/);
  const noGuest = await livemig(['status', '--control', join(dir.path, 'nobody.sock')]);
  assert.equal(noGuest.code, 1);
  assert.match(noGuest.stderr, /cannot reach the guest's control socket .*nobody\.sock: ENOENT \[CONTROL_UNREACHABLE\]/);

  const foreign = join(dir.path, 'foreign.sqlite');
  writeFileSync(foreign, 'not a database at all, just text'.repeat(200));
  const f = await p2b(['stats', foreign]);
  assert.equal(f.code, 1);
  assert.match(f.stderr, /^p2b: .*foreign\.sqlite is not a livemig p2b map database.*\[P2B_FOREIGN_FILE\]\n$/);
  const m = await p2b(['stats', join(dir.path, 'missing.sqlite')]);
  assert.equal(m.code, 1);
  assert.match(m.stderr, /no such p2b map database \[P2B_NOT_FOUND\]/);
  assert.equal((await p2b(['lookup', foreign])).code, 2);
  assert.equal((await p2b(['frob'])).code, 2);
});
