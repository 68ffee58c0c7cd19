/** Our NBD client against real servers: nbdkit (memory, file) and qemu-nbd. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NbdClient, NbdError, NbdRequestError, ERRNO } from '../../nbd/index.ts';
import { requireTools } from '../helpers/tools.ts';
import { tempDir, startNbdkit, startQemuNbd, type Peer } from '../helpers/processes.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const peers: Peer[] = [];
after(async () => {
  await Promise.all(peers.map((p) => p.stop()));
  dir.cleanup();
});

/** Deterministic pseudo-random numbers, so a failure can be replayed. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0) / 2 ** 32);
}

/**
 * Random reads and writes (odd offsets and lengths, many in flight at once),
 * every read checked against a local copy of what the export must hold.
 */
async function randomIo(client: NbdClient, local: Buffer, seed: number, ops = 400): Promise<void> {
  const rand = rng(seed);
  const batch: Promise<void>[] = [];
  // Requests in one batch run concurrently and may complete in any order, so a
  // write must overlap nothing else in its batch for the expectation to be exact.
  const writes: [number, number][] = [];
  const reads: [number, number][] = [];
  const overlaps = (ranges: [number, number][], o: number, n: number) => ranges.some(([a, b]) => o < b && a < o + n);
  for (let i = 0; i < ops; i++) {
    const length = 1 + Math.floor(rand() * (rand() < 0.2 ? 300_000 : 9000));
    const offset = Math.floor(rand() * (local.length - length));
    if (rand() < 0.4) {
      if (overlaps(writes, offset, length) || overlaps(reads, offset, length)) continue;
      const data = randomFillSync(Buffer.alloc(length));
      data.copy(local, offset);
      writes.push([offset, offset + length]);
      batch.push(client.write(offset, data));
    } else if (!overlaps(writes, offset, length)) {
      const expect = Buffer.from(local.subarray(offset, offset + length));
      reads.push([offset, offset + length]);
      batch.push(client.read(offset, length).then((got) => assert.ok(got.equals(expect), `read at ${offset}+${length} differs`)));
    }
    if (batch.length >= 32) {
      await Promise.all(batch.splice(0));
      writes.length = 0;
      reads.length = 0;
    }
  }
  await Promise.all(batch);
  await client.flush();
  const whole = await client.read(0, local.length);
  assert.ok(whole.equals(local), 'the export differs from the local copy after random I/O');
}

test('client against nbdkit memory: structured replies, random I/O, trim and zero', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const peer = await startNbdkit(dir.path, 'memory', ['size=16M']);
  peers.push(peer);
  const client = await NbdClient.connect(peer.uri());
  try {
    assert.equal(client.size, 16 * MiB);
    assert.equal(client.structuredReplies, true, 'nbdkit offers structured replies');
    const local = Buffer.alloc(16 * MiB);
    await randomIo(client, local, 1);
    // nbdkit memory answers reads of unwritten or trimmed areas with hole chunks.
    await client.trim(4 * MiB, MiB);
    local.fill(0, 4 * MiB, 5 * MiB);
    await client.writeZeroes(8 * MiB + 17, 70_000);
    local.fill(0, 8 * MiB + 17, 8 * MiB + 17 + 70_000);
    assert.ok((await client.read(0, local.length)).equals(local));
  } finally {
    await client.close();
  }
});

test('client against nbdkit file: writes land in the file', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const file = join(dir.path, 'nbdkit-file.img');
  const initial = randomFillSync(Buffer.alloc(8 * MiB));
  writeFileSync(file, initial);
  const peer = await startNbdkit(dir.path, 'file', [file]);
  peers.push(peer);
  const client = await NbdClient.connect(peer.uri());
  const local = Buffer.from(initial);
  try {
    await randomIo(client, local, 2);
    await client.write(MiB + 3, Buffer.from('livemig'), { fua: true });
    local.write('livemig', MiB + 3);
  } finally {
    await client.close();
  }
  assert.ok(readFileSync(file).equals(local), 'file behind nbdkit differs');
});

test('client against qemu-nbd: random I/O and large split reads', async (t) => {
  if (!requireTools(t, 'qemu-nbd')) return;
  const file = join(dir.path, 'qemu.img');
  const initial = randomFillSync(Buffer.alloc(48 * MiB));
  writeFileSync(file, initial);
  const peer = await startQemuNbd(dir.path, file, ['--cache=none', '--aio=threads']);
  peers.push(peer);
  const client = await NbdClient.connect(peer.uri());
  const local = Buffer.from(initial);
  try {
    assert.equal(client.size, 48 * MiB);
    await randomIo(client, local, 3);
    // 40 MiB exceeds the 32 MiB request limit: the client must split it.
    assert.ok((await client.read(MiB, 40 * MiB)).equals(local.subarray(MiB, 41 * MiB)));
  } finally {
    await client.close();
  }
  assert.ok(readFileSync(file).equals(local));
});

test('client reports a read-only export refusing a write as EPERM', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const peer = await startNbdkit(dir.path, 'memory', ['size=1M'], ['--readonly']);
  peers.push(peer);
  const client = await NbdClient.connect(peer.uri());
  try {
    assert.equal(client.readOnly, true);
    await assert.rejects(client.write(0, Buffer.alloc(512, 1)), (e: unknown) => e instanceof NbdRequestError && e.errno === ERRNO.EPERM);
    // The connection survives a refused request.
    assert.equal((await client.read(0, 512)).length, 512);
  } finally {
    await client.close();
  }
});

test('client gives clear errors for an unreachable server and a bad URI', async () => {
  await assert.rejects(
    NbdClient.connect(`nbd+unix:///x?socket=${join(dir.path, 'nope.sock')}`),
    (e: unknown) => e instanceof NbdError && e.code === 'NBD_CONNECT_FAILED' && /ENOENT/.test(e.message),
  );
  await assert.rejects(NbdClient.connect('nbd://127.0.0.1:1/'), (e: unknown) => e instanceof NbdError && e.code === 'NBD_CONNECT_FAILED');
  await assert.rejects(NbdClient.connect('http://x/'), (e: unknown) => e instanceof NbdError && e.code === 'NBD_BAD_URI');
});

test('client fails pending requests when the server dies mid-transfer', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const peer = await startNbdkit(dir.path, 'memory', ['size=64M']);
  const client = await NbdClient.connect(peer.uri());
  const reads = Array.from({ length: 64 }, (_, i) => client.read(i * MiB, MiB));
  peer.process.kill('SIGKILL');
  const results = await Promise.allSettled(reads);
  const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
  // Some reads may have completed before the kill; the rest fail with NBD_CLOSED, none hang.
  for (const f of failed) assert.equal((f.reason as NbdError).code, 'NBD_CLOSED');
  await assert.rejects(client.read(0, 4096), (e: unknown) => (e as NbdError).code === 'NBD_CLOSED');
  client.destroy();
});
