/**
 * Small file I/O runs on the event loop while it does not make other requests
 * wait, and goes to the thread pool for a while once inline calls do.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileExport, NbdClient, NbdServer } from '../../nbd/index.ts';
import { InlineIo } from '../../nbd/server/inline-io.ts';
import { tempDir } from '../helpers/processes.ts';

const dir = tempDir();
after(() => dir.cleanup());

/** Stands in for I/O that waits on storage: returns only after `ms` have passed. */
const busy = (ms: number) => () => {
  const end = performance.now() + ms;
  while (performance.now() < end);
};
const policy = () => new InlineIo({ slowMs: 0.05, capMs: 0.5, maxAverageWaitMs: 0.03, backoffMs: 30 });

test('with other requests in flight, calls that wait switch to the thread pool, then inline is tried again', () => {
  const io = policy();
  for (let i = 0; i < 1000; i++) assert.equal(io.run(4096, true, () => {}), true);
  assert.equal(io.backoffs, 0);
  // Storage that makes every call wait: within a few calls the pool takes over.
  let ran = 0;
  while (io.run(4096, true, busy(1))) ran++;
  assert.ok(ran >= 1 && ran <= 8, `${ran} waiting calls ran inline before the switch`);
  assert.equal(io.backoffs, 1);
  assert.equal(io.run(4096, true, () => {}), false, 'during the backoff, calls go to the pool');
  assert.equal(io.run(4096, false, () => {}), true, 'a request alone still runs inline');
  busy(31)();
  assert.equal(io.run(4096, true, () => {}), true, 'after the backoff, inline again');
});

test('a request alone never leaves inline, however long its I/O waits', () => {
  const io = policy();
  for (let i = 0; i < 20; i++) assert.equal(io.run(4096, false, busy(1)), true);
  assert.equal(io.backoffs, 0);
});

test('a rare slow call (a preemption, a cache miss) does not leave inline', () => {
  const io = policy();
  for (let i = 0; i < 2000; i++) assert.equal(io.run(4096, true, i % 100 === 0 ? busy(2) : () => {}), true);
  assert.equal(io.backoffs, 0);
  assert.ok(io.waits >= 20, `${io.waits} waits counted`);
});

test('requests above maxBytes never run inline', () => {
  const io = new InlineIo({ maxBytes: 65536 });
  assert.equal(io.run(65537, false, () => assert.fail('ran inline')), false);
  assert.equal(io.inlineCalls, 0);
});

test('a file export answers small reads and writes inline and large ones through the pool, with the same bytes', async () => {
  const file = join(dir.path, 'inline.img');
  const content = randomFillSync(Buffer.alloc(4 * 1024 * 1024));
  writeFileSync(file, content);
  const backend = await FileExport.open(file);
  const server = new NbdServer([{ name: '', backend }]);
  await server.listen({ transport: 'unix', path: join(dir.path, 'inline.sock') });
  const client = await NbdClient.connect(server.uri(''));
  try {
    const small = randomFillSync(Buffer.alloc(4096));
    await client.write(8192, small);
    small.copy(content, 8192);
    assert.ok((await client.read(8192, 4096)).equals(small));
    assert.ok((await client.read(0, 1024 * 1024)).equals(content.subarray(0, 1024 * 1024)));
    assert.equal(server.inlineIo('')!.inlineCalls, 2, 'the 4 KiB write and read ran inline, the 1 MiB read did not');
    await client.flush();
  } finally {
    await client.close();
    await server.close();
    await backend.close();
  }
  assert.ok(readFileSync(file).equals(content));
});
