/**
 * Handshake variants and every error code the engine can produce, each from a
 * real peer on a real socket: a destination whose disk has another size (refused) or
 * that speaks fewer encodings (counted on the wire by a frame-aware tap), a busy or
 * closed destination, and sources or destinations that break the protocol,
 * scripted with the protocol's own Channel. After each refusal the destination
 * still takes a real migration, checked by the oracle; after each failure on the
 * source side its guest runs on.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import net from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { copyFileSync, appendFileSync } from 'node:fs';
import { pino } from 'pino';
import { listenIncoming, type Incoming } from '../../src/migrate/destination/index.ts';
import { migrate, type MigrateOptions } from '../../src/migrate/source/index.ts';
import { Agent } from '../../src/cli/agent.ts';
import { LivemigError } from '../../src/errors.ts';
import {
  CAPABILITIES, CAPABILITY, Channel, FRAME, PageBatch, PROTOCOL_VERSION, digest, pageHash, peerError, type Hello,
} from '../../src/wire/index.ts';
import { scriptedHello } from '../helpers/scripted-hello.ts';
import { tempDir, waitFor } from '../helpers/processes.ts';
import { randomImage } from '../helpers/disk-image.ts';
import { startNbdServe, type ServeProcess } from '../helpers/nbd-serve.ts';
import { startWarmGuest, migrateGuest, listenHeld, checkSwitchover } from '../helpers/migration.ts';
import { startFrameTap } from '../helpers/frame-tap.ts';
import { ownDisk } from '../helpers/nothing-lost.ts';
import { assertRunsOn } from '../helpers/outcome.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const DISK_BYTES = 64 * MiB;
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

const GUEST = 16 * MiB;
const opts = { strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const };
const hasCode = (code: string, message?: RegExp) => (e: unknown) => e instanceof LivemigError && e.code === code && (!message || message.test(e.message));

const warmGuest = (name: string, workload = 'pagecache') => startWarmGuest(dir.path, name, nbd.uri('disk'), workload, GUEST);

/** A real guest migrated to `incoming`, checked by the oracle: the destination takes guests. */
async function realMigration(incoming: Incoming, name: string): Promise<void> {
  const g = await warmGuest(name);
  const m = await migrateGuest(dir.path, g, 'p2b', { to: incoming });
  try {
    assert.equal(m.result.verified, true);
    assert.equal(m.oracle.equal, true, 'the oracle finds both memories equal');
    assert.ok(m.result.pages.ref > 0);
  } finally {
    await m.destination.stop();
  }
}

/** A valid HELLO of a 64 KiB guest on the test's disk (sampled as a source samples it), for scripted sources to send or spoil. */
const hello = (): Hello => scriptedHello(image, DISK_BYTES, nbd.uri('disk'));

/** Sends raw bytes as one frame: any type, any length field, any payload (the Channel builds only valid ones). */
function rawFrame(c: Channel, type: number, payload: Buffer, length = payload.length): void {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(type, 0);
  h.writeUInt32BE(length, 4);
  c.socket.write(Buffer.concat([h, payload]));
}

/**
 * A scripted source: `send` whatever it likes, then the destination's answer must
 * be an ERROR (returned as our error) and the connection must end. Waits until the
 * destination has put the attempt behind it, ready for the next.
 */
async function refusal(incoming: Incoming, send: (c: Channel) => Promise<void> | void): Promise<LivemigError> {
  const c = await Channel.connect('127.0.0.1', incoming.port);
  try {
    await send(c);
    let err: unknown = null;
    for (;;) {
      const m = await c.read().catch((e: unknown) => ((err = e), null));
      if (!m) break;
      if (m.name === 'ERROR') {
        err = peerError(m.body, 'destination');
        break;
      }
      assert.ok(m.name === 'WELCOME' || m.name === 'PROGRESS' || m.name === 'PAGE_REQUEST', `unexpected ${m.name} from the destination`);
    }
    assert.ok(err instanceof LivemigError && err.code !== 'MIGRATE_LINK_LOST', `an ERROR frame, got ${String(err)}`);
    await assert.rejects(c.read(), hasCode('MIGRATE_LINK_LOST'), 'and the destination closes the connection');
    await waitFor(() => incoming.state() === 'failed', 'the destination to put the attempt behind it');
    return err as LivemigError;
  } finally {
    c.destroy();
  }
}

test('a destination whose disk has another size refuses the guest with MIGRATE_STORAGE naming both sizes, reads nothing for it, and the source runs on', { timeout: 120_000 }, async () => {
  const bigger = join(dir.path, 'bigger.img');
  copyFileSync(image, bigger);
  appendFileSync(bigger, Buffer.alloc(4 * MiB));
  const other = await startNbdServe(['--export', `disk=${bigger}`]);
  const incoming = await listenHeld(dir.path, { disk: other.uri('disk') });
  const g = await warmGuest('size');
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port }),
      hasCode('MIGRATE_STORAGE', new RegExp(`not this destination's disk .*: size differs: ${DISK_BYTES + 4 * MiB} here, ${DISK_BYTES} at the source`)));
    await assertRunsOn(g);
    await waitFor(() => incoming.state() === 'failed', 'the destination to put the attempt behind it');
  } finally {
    incoming.close();
    await g.stop();
    await other.stop();
  }
});

test('a destination without pages.ref-run gets single references only, counted on the wire; with it, runs; without pages.ref, no references', { timeout: 180_000 }, async () => {
  const cases = [
    { name: 'norun', capabilities: CAPABILITIES.filter((c) => c !== CAPABILITY.REF_RUN) },
    { name: 'all', capabilities: CAPABILITIES },
    { name: 'noref', capabilities: CAPABILITIES.filter((c) => c !== CAPABILITY.REF && c !== CAPABILITY.REF_RUN) },
  ];
  for (const { name, capabilities } of cases) {
    const g = await warmGuest(`caps-${name}`);
    const taps: Awaited<ReturnType<typeof startFrameTap>>[] = [];
    const m = await migrateGuest(dir.path, g, 'p2b', { incoming: { capabilities }, via: async (port) => (taps.push(await startFrameTap(port)), taps[0].port) });
    try {
      const { entries, pages } = taps[0].counts;
      assert.equal(m.oracle.equal, true, `${name}: the oracle finds both memories equal`);
      assert.equal(m.result.verified, true);
      const onWire = (pages.get('REF') ?? 0) + (pages.get('REF_RUN') ?? 0);
      assert.equal(onWire, m.result.pages.ref, `${name}: the pages referenced on the wire are the ones the source reports`);
      if (name === 'norun') {
        assert.equal(entries.get('REF_RUN') ?? 0, 0, 'no runs to a destination that did not list pages.ref-run');
        assert.ok((entries.get('REF') ?? 0) > 1000, `single references (${entries.get('REF')})`);
      } else if (name === 'all') {
        assert.ok((entries.get('REF_RUN') ?? 0) > 0, 'runs when both list pages.ref-run');
        assert.ok((pages.get('REF_RUN') ?? 0) > (entries.get('REF_RUN') ?? 0), 'a run carries several pages');
      } else {
        assert.equal(onWire, 0, 'no references at all without pages.ref');
        assert.ok((entries.get('FULL') ?? 0) > 1000);
      }
    } finally {
      taps[0].close();
      await m.destination.stop();
    }
  }
});

test('a second source while one migrates gets MIGRATE_DESTINATION_BUSY, a second migrate of a migrating guest MIGRATE_IN_PROGRESS; the first migration completes, checked by the oracle', { timeout: 120_000 }, async () => {
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk') });
  const tap = await startFrameTap(incoming.port);
  const first = await warmGuest('busy-first');
  const second = await warmGuest('busy-second');
  const agent = new Agent(pino({ level: 'silent' }));
  agent.guestHere = first;
  const args = { to: `tcp://127.0.0.1:${tap.port}`, strategy: 'p2b' as const, maxBandwidth: 0, downtimeLimitMs: 300, maxRounds: 30, converge: 'throttle' as const, keepPaused: true };
  try {
    // The first source's traffic is held mid-round by the tap: it is migrating, whatever the machine's speed.
    const migrating = agent.migrate(args);
    migrating.catch(() => {}); // awaited below; a failure before that must not go unhandled
    await waitFor(() => (tap.counts.fromSource.get('PAGES') ?? 0) > 0, 'the first source to send pages');
    tap.hold();
    assert.equal(incoming.state(), 'receiving');
    await assert.rejects(agent.migrate(args), hasCode('MIGRATE_IN_PROGRESS'));
    await assert.rejects(migrate(second, { ...opts, host: '127.0.0.1', port: incoming.port }), hasCode('MIGRATE_DESTINATION_BUSY'));
    await assertRunsOn(second);
    tap.release();
    const result = (await migrating) as { verified: boolean };
    assert.equal(result.verified, true);
    const destination = await incoming.guest;
    assert.equal((await checkSwitchover(first, destination)).equal, true, 'the oracle finds both memories equal');
    await destination.stop();
  } finally {
    tap.close();
    incoming.close();
    await second.stop();
    await first.stop();
  }
});

test('a destination closed while waiting rejects its guest with MIGRATE_CANCELLED; a source then finds nothing listening: MIGRATE_CONNECT_FAILED, its guest runs on', { timeout: 60_000 }, async () => {
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk: nbd.uri('disk'), stateDir: () => join(dir.path, 'cancel-dst') });
  incoming.close();
  await assert.rejects(incoming.guest, hasCode('MIGRATE_CANCELLED'));
  const g = await warmGuest('connect');
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port }), hasCode('MIGRATE_CONNECT_FAILED', /cannot reach the destination/));
    await assertRunsOn(g);
  } finally {
    await g.stop();
  }
});

test('a HELLO lacking return-path is refused with MIGRATE_CAPABILITY; the destination then takes a real migration', { timeout: 120_000 }, async () => {
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk') });
  try {
    const e = await refusal(incoming, (c) => c.send({ name: 'HELLO', body: { ...hello(), capabilities: [CAPABILITY.FULL, CAPABILITY.ZERO, CAPABILITY.REF] } }));
    assert.ok(hasCode('MIGRATE_CAPABILITY', /return-path/)(e), e.message);
    await realMigration(incoming, 'after-capability');
  } finally {
    incoming.close();
  }
});

test('hostile HELLOs and frames out of order are each refused with MIGRATE_PROTOCOL; the destination then takes a real migration', { timeout: 120_000 }, async () => {
  const h = hello();
  const spoilt: [string, unknown, RegExp][] = [
    ['another protocol', { ...h, protocol: 'other' }, /not a livemig migration/],
    ['a short key', { ...h, key: 'abcd' }, /key/],
    ['memory not in pages', { ...h, guest: { ...h.guest, memoryBytes: 16 * 4096 + 100 } }, /multiple of 4096/],
    ['regions that do not tile memory', { ...h, guest: { ...h.guest, regions: [{ firstPage: 1, pages: 16 }] } }, /tile memory/],
    ['a long name', { ...h, guest: { ...h.guest, name: 'x'.repeat(300) } }, /name/],
    ['a sample hash that is not 16 bytes of hex', { ...h, storage: { ...h.storage, sample: [{ block: 0, hash: 'zz' }] } }, /hash/],
    ['a negative version', { ...h, versionMin: -1 }, /versionMin/],
    ['capabilities that are not a list', { ...h, capabilities: 'all' }, /capabilities/],
    ['a payload that is not an object', [1, 2, 3], /not an object/],
  ];
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk') });
  try {
    for (const [what, body, message] of spoilt) {
      const e = await refusal(incoming, (c) => c.send({ name: 'HELLO', body: body as Hello }));
      assert.ok(hasCode('MIGRATE_PROTOCOL', message)(e), `${what}: ${e.code} ${e.message}`);
    }
    const raw: [string, (c: Channel) => Promise<void> | void, RegExp][] = [
      ['a HELLO that is not JSON', (c) => rawFrame(c, FRAME.HELLO, Buffer.from('{"protocol": "livemig", ')), /not valid JSON/],
      ['a HELLO longer than its limit (refused on its header)', (c) => rawFrame(c, FRAME.HELLO, Buffer.alloc(0), 64 * 1024 + 1), /exceeds 65536/],
      ['PAGES before HELLO', (c) => c.send({ name: 'PAGES', body: new PageBatch(1).take() }), /unexpected frame PAGES/],
      ['COMPLETE before HELLO', (c) => c.send({ name: 'COMPLETE', body: { lastSeq: 0 } }), /unexpected frame COMPLETE/],
      ['a frame of an unknown type', (c) => rawFrame(c, 99, Buffer.alloc(0)), /unknown frame type 99/],
      ['a frame of type 0', (c) => rawFrame(c, 0, Buffer.alloc(0)), /unknown frame type 0/],
    ];
    for (const [what, send, message] of raw) {
      const e = await refusal(incoming, send);
      assert.ok(hasCode('MIGRATE_PROTOCOL', message)(e), `${what}: ${e.code} ${e.message}`);
    }
    await realMigration(incoming, 'after-protocol');
  } finally {
    incoming.close();
  }
});

test('a peer that never sends a whole HELLO is dropped with MIGRATE_TIMEOUT; the destination then takes a real migration', { timeout: 120_000 }, async () => {
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk'), helloTimeoutMs: 500 });
  try {
    const silent = await refusal(incoming, () => {});
    assert.ok(hasCode('MIGRATE_TIMEOUT', /no HELLO from the source within 500 ms/)(silent), silent.message);
    const half = await refusal(incoming, (c) => rawFrame(c, FRAME.HELLO, Buffer.from('{"protocol": "livemig"'), 500));
    assert.ok(hasCode('MIGRATE_TIMEOUT')(half), half.message);
    await realMigration(incoming, 'after-timeout');
  } finally {
    incoming.close();
  }
});

test('a guest larger than this host\'s memory, or of another page size, is refused with MIGRATE_LAYOUT; the destination then takes a real migration', { timeout: 120_000 }, async () => {
  const h = hello();
  const bytes = (Math.ceil(os.totalmem() / GiB) + 1) * GiB;
  const regions = Array.from({ length: bytes / GiB }, (_, i) => ({ firstPage: i * (GiB / 4096), pages: GiB / 4096 }));
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk') });
  try {
    const big = await refusal(incoming, (c) => c.send({ name: 'HELLO', body: { ...h, guest: { ...h.guest, memoryBytes: bytes, regions } } }));
    assert.ok(hasCode('MIGRATE_LAYOUT', new RegExp(`${bytes} bytes of memory exceed this destination's limit of ${os.totalmem()}`))(big), big.message);
    const pageSize = await refusal(incoming, (c) => c.send({ name: 'HELLO', body: { ...h, guest: { ...h.guest, pageSize: 8192 } } }));
    assert.ok(hasCode('MIGRATE_LAYOUT', /page size 8192/)(pageSize), pageSize.message);
    await realMigration(incoming, 'after-layout');
  } finally {
    incoming.close();
  }
});

test('a scripted source past the handshake: an unreadable device state (GUEST_DEVICE_STATE), wrong digests (MIGRATE_VERIFY_FAILED), frames out of order (MIGRATE_PROTOCOL); nothing starts, and then a real migration', { timeout: 120_000 }, async () => {
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk') });
  /** After HELLO and WELCOME, `then` sends the rest. */
  const scripted = (then: (c: Channel, key: Buffer) => Promise<void>) =>
    refusal(incoming, async (c) => {
      const h = hello();
      await c.send({ name: 'HELLO', body: h });
      await c.expect('WELCOME', 30_000, 'destination');
      await then(c, Buffer.from(h.key!, 'hex'));
    });
  // The scripted guest's memory is 16 zero pages: one digest chunk, one region.
  const zeroDigests = (key: Buffer) => [digest(key, digest(key, Buffer.alloc(16 * 4096))).toString('hex')];
  const finish = async (c: Channel, device: Buffer, digests: string[]) => {
    await c.send({ name: 'DEVICE_STATE', body: device });
    await c.send({ name: 'COMPLETE', body: { lastSeq: 0 } });
    await c.send({ name: 'DIGESTS', body: { digests } });
  };
  try {
    const device = await scripted((c, key) => finish(c, Buffer.from('not a device state'), zeroDigests(key)));
    assert.ok(hasCode('GUEST_DEVICE_STATE')(device), device.message);
    const verify = await scripted((c) => finish(c, Buffer.from('{"version": 1}'), ['00'.repeat(32)]));
    assert.ok(hasCode('MIGRATE_VERIFY_FAILED')(verify), verify.message);
    const noDevice = await scripted(async (c, key) => {
      await c.send({ name: 'COMPLETE', body: { lastSeq: 0 } });
      await c.send({ name: 'DIGESTS', body: { digests: zeroDigests(key) } });
    });
    assert.ok(hasCode('MIGRATE_PROTOCOL', /no DEVICE_STATE before COMPLETE/)(noDevice), noDevice.message);
    const pastEnd = await scripted(async (c, key) => {
      const b = new PageBatch();
      b.addRef(0, 1, DISK_BYTES / 4096, 1, pageHash(key, Buffer.alloc(4096)));
      await c.send({ name: 'PAGES', body: b.take() });
    });
    assert.ok(hasCode('MIGRATE_PROTOCOL', /past the end of the disk/)(pastEnd), pastEnd.message);
    const mapAfterComplete = await scripted(async (c) => {
      await c.send({ name: 'DEVICE_STATE', body: Buffer.from('{}') });
      await c.send({ name: 'COMPLETE', body: { lastSeq: 0 } });
      await c.send({ name: 'MAP', body: Buffer.alloc(4) });
    });
    assert.ok(hasCode('MIGRATE_PROTOCOL', /unexpected frame MAP/)(mapAfterComplete), mapAfterComplete.message);
    await realMigration(incoming, 'after-scripted');
  } finally {
    incoming.close();
  }
});

/** A destination scripted to answer HELLO with `reply` (and then to hang up). */
async function scriptedDestination(reply: (c: Channel) => Promise<void>): Promise<{ port: number; close: () => void }> {
  const server = net.createServer((socket) => {
    const c = new Channel(socket);
    void c.expect('HELLO', 30_000, 'source').then(() => reply(c)).catch(() => {}).finally(() => c.close());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

test('the source refuses a destination of another version, one lacking return-path, a malformed WELCOME, and names an unknown error code MIGRATE_FAILED; its guest runs on', { timeout: 120_000 }, async () => {
  const g = await warmGuest('source-refuses');
  const welcome = { version: PROTOCOL_VERSION, capabilities: [...CAPABILITIES], storageMatch: true };
  const cases: [string, (c: Channel) => Promise<void>, (e: unknown) => boolean][] = [
    ['another version', (c) => c.send({ name: 'WELCOME', body: { ...welcome, version: PROTOCOL_VERSION + 5 } }), hasCode('MIGRATE_VERSION', new RegExp(`chose version ${PROTOCOL_VERSION + 5}`))],
    ['no return path', (c) => c.send({ name: 'WELCOME', body: { ...welcome, capabilities: [CAPABILITY.FULL, CAPABILITY.ZERO] } }), hasCode('MIGRATE_CAPABILITY', /the destination lacks return-path/)],
    ['a malformed WELCOME', (c) => c.send({ name: 'WELCOME', body: { ...welcome, storageMatch: 'yes' } as unknown as typeof welcome }), hasCode('MIGRATE_PROTOCOL', /storageMatch/)],
    ['an error code from the future', (c) => c.send({ name: 'ERROR', body: { code: 'MIGRATE_SOMETHING_NEW', message: 'a reason from a newer build' } }), hasCode('MIGRATE_FAILED', /a reason from a newer build/)],
  ];
  try {
    for (const [what, reply, check] of cases) {
      const dst = await scriptedDestination(reply);
      try {
        const o: MigrateOptions = { ...opts, host: '127.0.0.1', port: dst.port };
        await assert.rejects(migrate(g, o), check, what);
        await assertRunsOn(g);
      } finally {
        dst.close();
      }
    }
  } finally {
    await g.stop();
  }
});

test('a guest whose disk failed cannot migrate: MIGRATE_GUEST_STATE, and the destination never hears of it and then takes a real migration', { timeout: 120_000 }, async () => {
  const own = await ownDisk(dir.path, image, 'failed');
  const g = await startWarmGuest(dir.path, 'failed', own.uri, 'diskwrite', GUEST);
  const incoming = await listenHeld(dir.path, { disk: nbd.uri('disk') });
  try {
    await own.server.stop(); // the guest's next disk write fails
    await waitFor(async () => (await g.status()).state === 'error', 'the guest to fail on its disk');
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port }), hasCode('MIGRATE_GUEST_STATE', /guest is error/));
    assert.equal(incoming.state(), 'listening', 'the destination was never contacted');
    await realMigration(incoming, 'after-guest-state');
  } finally {
    incoming.close();
    await g.stop();
  }
});

test('a destination that cannot open the disk refuses with MIGRATE_STORAGE, the source runs on; once the disk is there it takes the guest', { timeout: 120_000 }, async () => {
  const later = join(dir.path, 'later.img');
  const incoming = await listenHeld(dir.path, { disk: later });
  const g = await warmGuest('storage');
  try {
    await assert.rejects(migrate(g, { ...opts, host: '127.0.0.1', port: incoming.port }), hasCode('MIGRATE_STORAGE', /cannot open the guest's disk/));
    await assertRunsOn(g);
    await waitFor(() => incoming.state() === 'failed', 'the destination to put the attempt behind it');
    copyFileSync(image, later); // the same bytes, as a file this host sees
    const m = await migrateGuest(dir.path, g, 'p2b', { to: incoming, destinationDisk: later });
    try {
      assert.equal(m.oracle.equal, true);
      assert.equal(m.result.storageMatch, true);
      assert.ok(m.result.pages.ref > 0);
      assert.equal(m.mappedWrong, 0);
    } finally {
      await m.destination.stop();
    }
  } finally {
    incoming.close();
    await g.stop();
  }
});
