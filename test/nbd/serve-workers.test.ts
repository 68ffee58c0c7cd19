/** `livemig nbd serve --workers N`: processes sharing one listening socket, stopped together. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { NbdClient } from '../../nbd/index.ts';
import { tempDir, livemig } from '../helpers/processes.ts';
import { startNbdServe } from '../helpers/nbd-serve.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
after(() => dir.cleanup());

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('two workers serve clients of one file export; SIGTERM stops every process', async () => {
  const file = join(dir.path, 'workers.img');
  const content = randomFillSync(Buffer.alloc(8 * MiB));
  writeFileSync(file, content);
  const serve = await startNbdServe(['--workers', '2', '--export', `disk=${file}`]);
  const pids: number[] = serve.info.pids;
  assert.equal(pids.length, 3, 'the primary and two workers');
  const clients = await Promise.all(Array.from({ length: 6 }, () => NbdClient.connect(serve.uri('disk'))));
  // Writes through some connections are seen through the others, whichever process serves them.
  await Promise.all(clients.map((c, i) => c.write(i * MiB, Buffer.alloc(MiB, i + 1))));
  await Promise.all(clients.map((c) => c.flush()));
  for (const [i, c] of clients.entries()) {
    const other = (i + 1) % clients.length;
    assert.ok((await c.read(other * MiB, MiB)).every((b) => b === other + 1));
  }
  await Promise.all(clients.map((c) => c.close()));
  await serve.stop();
  assert.deepEqual(pids.filter(alive), [], 'a process outlived the server');
  for (let i = 0; i < 6; i++) content.fill(i + 1, i * MiB, (i + 1) * MiB);
  assert.ok(readFileSync(file).equals(content));
});

test('workers share a Unix socket, and the socket file is gone after the stop', async () => {
  const file = join(dir.path, 'unix.img');
  writeFileSync(file, Buffer.alloc(MiB));
  const socket = join(dir.path, 'w.sock');
  const serve = await startNbdServe(['--workers', '2', '--export', file, '--listen', `unix:${socket}`]);
  const c = await NbdClient.connect(serve.uri(''));
  await c.write(0, Buffer.from('via a worker'));
  assert.equal((await c.read(0, 12)).toString(), 'via a worker');
  await c.close();
  await serve.stop();
  assert.equal(existsSync(socket), false);
});

test('--workers above 1 with a memory export is a usage error', async () => {
  const r = await livemig(['nbd', 'serve', '--workers', '2', '--memory-export', 'm=1MiB']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /a memory export cannot be shared between processes/);
});
