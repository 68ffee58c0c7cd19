/**
 * The destination's idle timeout: a source that sent a valid HELLO and then nothing,
 * or that stops in the middle of a PAGES frame, is answered ERROR MIGRATE_TIMEOUT
 * and dropped, nothing starts, and the same listener then takes a real migration
 * (checked by the oracle), whose source keeps the link alive through its own pauses.
 * Scripted peers speak the protocol's own Channel over real TCP.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Incoming } from '../../src/migrate/destination/index.ts';
import { LivemigError } from '../../src/errors.ts';
import { Channel, FRAME, PageBatch, peerError, type Hello } from '../../src/wire/index.ts';
import { scriptedHello } from '../helpers/scripted-hello.ts';
import { tempDir, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startNbdServe, type ServeProcess } from '../helpers/nbd-serve.ts';
import { startWarmGuest, migrateGuest, listenHeld } from '../helpers/migration.ts';

const MiB = 1024 * 1024;
const DISK_BYTES = 64 * MiB;
/** Short for the test, yet several of the source's keepalive intervals, so the real migration is never cut. */
const IDLE_MS = 5000;
const dir = tempDir();
const image = join(dir.path, 'disk.img');
let nbd: ServeProcess;
before(async () => {
  randomImage(image, DISK_BYTES);
  nbd = await startNbdServe(['--export', `disk=${image}`]);
});
after(async () => {
  await nbd?.stop();
  dir.cleanup();
});

/** A valid HELLO of a 64 KiB guest on the test's disk, sampled as a source samples it. */
const hello = (): Hello => scriptedHello(image, DISK_BYTES, nbd.uri('disk'));

/**
 * A scripted source: HELLO, WELCOME, then `then` (which ends in silence). The
 * destination's answer must be an ERROR, then a closed connection, and the
 * listener must put the attempt behind it.
 */
async function silentSource(incoming: Incoming, then: (c: Channel) => Promise<void>): Promise<LivemigError> {
  const c = await Channel.connect('127.0.0.1', incoming.port);
  try {
    await c.send({ name: 'HELLO', body: hello() });
    await c.expect('WELCOME', 30_000, 'destination');
    await then(c);
    let err: unknown = null;
    for (;;) {
      const m = await c.read().catch((e: unknown) => ((err = e), null));
      if (!m) break;
      if (m.name === 'ERROR') {
        err = peerError(m.body, 'destination');
        break;
      }
      assert.ok(m.name === 'PROGRESS' || m.name === 'PAGE_REQUEST', `unexpected ${m.name} from the destination`);
    }
    assert.ok(err instanceof LivemigError && err.code !== 'MIGRATE_LINK_LOST', `an ERROR frame, got ${String(err)}`);
    await assert.rejects(c.read(), (e) => e instanceof LivemigError && e.code === 'MIGRATE_LINK_LOST', 'and the destination closes the connection');
    await waitFor(() => incoming.state() === 'failed', 'the destination to put the attempt behind it');
    return err as LivemigError;
  } finally {
    c.destroy();
  }
}

/** A real guest migrated to `incoming`, checked by the oracle. */
async function realMigration(incoming: Incoming, name: string): Promise<void> {
  const g = await startWarmGuest(dir.path, name, nbd.uri('disk'), 'pagecache', 16 * MiB);
  const m = await migrateGuest(dir.path, g, 'p2b', { to: incoming });
  try {
    assert.equal(m.result.verified, true);
    assert.equal(m.oracle.equal, true, 'the oracle finds both memories equal');
  } finally {
    await m.destination.stop();
  }
}

const timedOut = (e: LivemigError) => e.code === 'MIGRATE_TIMEOUT' && new RegExp(`sent nothing for ${IDLE_MS} ms`).test(e.message);

test('a source silent after WELCOME, or stopped in the middle of a PAGES frame, gets MIGRATE_TIMEOUT; the destination then takes a real migration', { timeout: 180_000 }, async () => {
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), idleTimeoutMs: IDLE_MS });
  try {
    const silent = await silentSource(incoming, async () => {});
    assert.ok(timedOut(silent), silent.message);
    const midFrame = await silentSource(incoming, async (c) => {
      const b = new PageBatch();
      b.addFull(0, 1, Buffer.alloc(4096, 7));
      await c.send({ name: 'PAGES', body: b.take() }); // a whole frame first: the session is under way
      const h = Buffer.alloc(8);
      h.writeUInt16BE(FRAME.PAGES, 0);
      h.writeUInt32BE(4 + 12 + 4096, 4);
      c.socket.write(Buffer.concat([h, Buffer.alloc(100)])); // then a frame's first bytes, and nothing more
    });
    assert.ok(timedOut(midFrame), midFrame.message);
    await realMigration(incoming, 'after-idle');
  } finally {
    incoming.close();
  }
});

test('a source arriving while a failed attempt is cleaned up waits for the cleanup and is welcomed, not told MIGRATE_DESTINATION_BUSY', { timeout: 120_000 }, async () => {
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), idleTimeoutMs: IDLE_MS });
  const first = await Channel.connect('127.0.0.1', incoming.port);
  let second: Channel | null = null;
  try {
    await first.send({ name: 'HELLO', body: hello() });
    await first.expect('WELCOME', 30_000, 'destination');
    const b = new PageBatch();
    b.addFull(16, 1, Buffer.alloc(4096)); // outside the 16-page guest: refused, and the destination cleans up
    await first.send({ name: 'PAGES', body: b.take() });
    for (;;) if ((await first.read()).name === 'ERROR') break;
    // The refusal is sent before the cleanup ends: this peer arrives while it runs.
    second = await Channel.connect('127.0.0.1', incoming.port);
    await second.send({ name: 'HELLO', body: hello() });
    const w = await second.expect('WELCOME', 30_000, 'destination');
    assert.ok(w.capabilities.length > 0);
    second.destroy();
    await waitFor(() => incoming.state() === 'failed', 'the destination to put the second attempt behind it');
  } finally {
    first.destroy();
    second?.destroy();
    incoming.close();
  }
});
