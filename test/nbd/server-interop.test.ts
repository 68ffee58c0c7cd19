/** Our NBD server, driven by the real peers: nbdinfo, nbdcopy, qemu-img, qemu-io. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, readFileSync, openSync, writeSync, closeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { requireTools } from '../helpers/tools.ts';
import { run, tempDir } from '../helpers/processes.ts';
import { startOwnServer, type OwnServer } from '../helpers/servers.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
let srv: OwnServer;
const disk = join(dir.path, 'disk.img');
const ro = join(dir.path, 'ro.img');

before(async () => {
  writeFileSync(disk, Buffer.alloc(0));
  const fd = openSync(disk, 'r+');
  ftruncateSync(fd, 256 * MiB);
  closeSync(fd);
  writeFileSync(ro, randomFillSync(Buffer.alloc(4 * MiB)));
  srv = await startOwnServer(dir.path, [
    { name: '', file: disk },
    { name: 'ro', file: ro, readOnly: true },
    { name: 'scratch', memory: 32 * MiB },
  ]);
});
after(async () => {
  await srv?.close();
  dir.cleanup();
});

test('nbdinfo reads size and flags of a file export', async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const r = await run('nbdinfo', ['--json', srv.uri('')]);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  assert.equal(info.protocol, 'newstyle-fixed');
  assert.equal(info.exports[0]['export-size'], 256 * MiB);
  assert.equal(info.exports[0]['is_read_only'], false);
  assert.equal(info.exports[0]['can_flush'], true);
  assert.equal(info.exports[0]['can_fua'], true);
  assert.equal(info.exports[0]['can_trim'], true);
  assert.equal(info.exports[0]['can_zero'], true);
  assert.equal(info.exports[0]['block_size_maximum'], 64 * MiB);
});

test('nbdinfo sees a read-only export as read-only', async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const r = await run('nbdinfo', ['--json', srv.uri('ro')]);
  assert.equal(r.code, 0, r.stderr);
  const e = JSON.parse(r.stdout).exports[0];
  assert.equal(e['is_read_only'], true);
  assert.equal(e['export-size'], 4 * MiB);
});

test('nbdinfo --list shows every export with its description', async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const r = await run('nbdinfo', ['--list', '--json', srv.uri('')]);
  assert.equal(r.code, 0, r.stderr);
  const exports = JSON.parse(r.stdout).exports as { 'export-name': string; description: string }[];
  assert.deepEqual(exports.map((e) => e['export-name']).sort(), ['', 'ro', 'scratch']);
  assert.match(exports.find((e) => e['export-name'] === 'ro')!.description, /^file .*ro\.img$/);
});

test('nbdcopy copies a random 256 MiB image in and out byte for byte', async (t) => {
  if (!requireTools(t, 'nbdcopy')) return;
  const src = join(dir.path, 'random.img');
  const out = join(dir.path, 'out.img');
  const chunk = Buffer.alloc(16 * MiB);
  const fd = openSync(src, 'w');
  for (let i = 0; i < 16; i++) writeSync(fd, randomFillSync(chunk));
  closeSync(fd);
  const copyIn = await run('nbdcopy', [src, srv.uri('')]);
  assert.equal(copyIn.code, 0, copyIn.stderr);
  const copyOut = await run('nbdcopy', [srv.uri(''), out]);
  assert.equal(copyOut.code, 0, copyOut.stderr);
  assert.ok(readFileSync(src).equals(readFileSync(out)), 'image read back differs from what was written');
  assert.ok(readFileSync(src).equals(readFileSync(disk)), 'file behind the export differs');
});

test('qemu-img convert and compare work through the server', async (t) => {
  if (!requireTools(t, 'qemu-img')) return;
  const copy = join(dir.path, 'ro-copy.img');
  const conv = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('ro'), copy]);
  assert.equal(conv.code, 0, conv.stderr);
  assert.ok(readFileSync(copy).equals(readFileSync(ro)));
  const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', copy, srv.uri('ro')]);
  assert.equal(same.code, 0, same.stdout + same.stderr);
  const c = readFileSync(copy);
  c[12345] ^= 0xff;
  writeFileSync(copy, c);
  const differ = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', copy, srv.uri('ro')]);
  assert.equal(differ.code, 1, 'qemu-img compare must see the flipped byte');
  assert.match(differ.stdout, /Content mismatch at offset 12288/);
});

test('qemu-io writes and verifies patterns at odd offsets', async (t) => {
  if (!requireTools(t, 'qemu-io')) return;
  const cmds = [
    'write -P 0x5a 1 4095', 'write -P 0xa5 1048573 70001', 'write -z 2000000 12345', 'write -P 0x11 4097 513',
    'read -P 0x5a 1 4095', 'read -P 0x11 4097 513', 'read -P 0xa5 1048573 70001', 'read -P 0 2000000 12345', 'flush',
  ];
  const r = await run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), srv.uri('scratch')]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout + r.stderr, /verification failed|error/i);
  // A wrong expectation must be caught, or the checks above prove nothing.
  const wrong = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5b 1 4095', srv.uri('scratch')]);
  assert.match(wrong.stdout + wrong.stderr, /Pattern verification failed/);
});

test('qemu-io cannot write a read-only export', async (t) => {
  if (!requireTools(t, 'qemu-io')) return;
  const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4096', srv.uri('ro')]);
  assert.match(r.stdout + r.stderr, /read-only|Operation not permitted|Permission denied/i);
  assert.ok(readFileSync(ro).subarray(0, 4096).some((b) => b !== 1), 'read-only file was modified');
});
