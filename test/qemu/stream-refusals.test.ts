/**
 * What each QEMU migration capability livemig cannot carry looks like in the stream,
 * recorded from the real QEMU (the guest runs its file-reading loop, so pages get
 * dirtied again and xbzrle has deltas to send): the parser refuses each, naming the
 * capability, and the source QEMU fails the migration and keeps the guest running.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { QemuStreamParser, QemuStreamError } from '../../src/qemu/stream/index.ts';
import { tempDir } from '../helpers/processes.ts';
import { haveTool, requireTools } from '../helpers/tools.ts';
import { bootTestGuest, recordMigration, QEMU_TOOLS, type Recording, type TestGuest } from '../helpers/qemu-guest.ts';
import { launchQemu } from '../../src/qemu/launch.ts';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';

const dir = tempDir('livemig-qemu-');
let guest: TestGuest | undefined;

before(async () => {
  if (!QEMU_TOOLS.every(haveTool)) return;
  guest = await bootTestGuest(dir.path, { loop: true });
});
after(async () => {
  await guest?.stop();
  dir.cleanup();
});

interface Refusal {
  recording: Recording;
  errors: QemuStreamError[];
  commands: string[];
}

/**
 * Migrates to a socket whose every connection feeds a parser. A refusal closes every
 * connection of the migration, as the source proxy does: closing only a refused multifd
 * channel lets QEMU finish a paused guest's few non-zero pages before it notices.
 */
async function migrateThroughParser(opts: Parameters<typeof recordMigration>[2], qemu = guest!.qemu): Promise<Refusal> {
  const errors: QemuStreamError[] = [];
  const commands: string[] = [];
  const sockets: Socket[] = [];
  const { status } = await qemu.qmp.execute<{ status: string }>('query-status');
  if (status === 'postmigrate') await qemu.qmp.execute('cont'); // an earlier case completed: do not fail this one too
  const recording = await recordMigration(qemu, dir.path, opts, (socket) => {
    sockets.push(socket);
    const parser = new QemuStreamParser();
    const refuse = (err: unknown) => (errors.push(err as QemuStreamError), sockets.forEach((s) => s.destroy()));
    socket.on('data', (chunk: Buffer) => {
      try {
        parser.push(chunk, (r) => void (r.kind === 'command' && commands.push(r.name)));
      } catch (err) {
        refuse(err);
      }
    });
    socket.on('error', () => {});
  });
  return { recording, errors, commands };
}

/** The source failed the migration and resumed the guest, which still answers. */
async function sourceStillRuns(r: Refusal): Promise<void> {
  assert.equal(r.recording.info.status, 'failed');
  const status = await guest!.qemu.qmp.execute<{ status: string }>('query-status');
  assert.equal(status.status, 'running');
  await guest!.qemu.serial.askAlive(30_000);
}

function assertRefused(r: Refusal, code: string, capability: string, pattern: RegExp): void {
  const err = r.errors.find((e) => e.capability === capability);
  assert.ok(err, `no refusal naming ${capability}: ${r.errors.map((e) => e.message).join('; ') || 'none'}`);
  assert.ok(err instanceof QemuStreamError);
  assert.equal(err.code, code);
  assert.match(err.message, pattern);
}

test('livemig.loop=1 starts the file-reading loop in the guest', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  await guest!.qemu.serial.waitFor('file-reading loop started', 10_000, 0);
  await guest!.qemu.serial.ask('grep -c livemig.loop=1 /proc/cmdline', /\r?\n1\r?\n/, 10_000);
});

test('compress: compressed pages are refused', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const r = await migrateThroughParser({ capabilities: { compress: true } });
  assertRefused(r, 'QEMU_STREAM_UNSUPPORTED', 'compress', /compressed page/);
  await sourceStillRuns(r);
});

test('xbzrle: the first delta page (a page dirtied again after the first pass) is refused', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  // a 1 ms downtime limit keeps QEMU iterating while the guest's loop dirties pages, until a delta appears
  const r = await migrateThroughParser({ capabilities: { xbzrle: true }, parameters: { 'downtime-limit': 1 }, reset: { 'downtime-limit': 300 } });
  assertRefused(r, 'QEMU_STREAM_UNSUPPORTED', 'xbzrle', /XBZRLE/);
  await sourceStillRuns(r);
});

test('multifd: the extra channels QEMU opens are refused by their magic', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  // Its own paused QEMU: under load, QEMU 7.2 can wedge after a multifd channel fails
  // (query-migrate reads failed, then setup for good), and no later migration would start.
  const { image, nbd } = guest!;
  const qemu = await launchQemu({
    dir: dir.path, name: 'multifd', memoryBytes: 64 << 20, kernel: image.kernel, initrd: image.initrd, append: 'console=ttyS0',
    disk: { uri: nbd.uri('disk'), readOnly: true }, paused: true,
  });
  try {
    const r = await migrateThroughParser({ capabilities: { multifd: true }, parameters: { 'multifd-channels': 2 }, keepSettings: true }, qemu);
    assert.ok(r.recording.connections >= 2, 'the main channel and at least one multifd channel');
    assertRefused(r, 'QEMU_STREAM_NOT_QEMU', 'multifd', /multifd channel/);
    assert.equal(r.recording.info.status, 'failed');
  } finally {
    await qemu.kill();
  }
});

test('postcopy-ram: the POSTCOPY_ADVISE command is refused (after OPEN_RETURN_PATH and PING)', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const r = await migrateThroughParser({ capabilities: { 'postcopy-ram': true } });
  assert.deepEqual(r.commands, ['OPEN_RETURN_PATH', 'PING']);
  assertRefused(r, 'QEMU_STREAM_UNSUPPORTED', 'postcopy-ram', /POSTCOPY_ADVISE/);
  await sourceStillRuns(r);
});

test('return-path: a stream that opens a return path is refused at its first section', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const r = await migrateThroughParser({ capabilities: { 'return-path': true } });
  assert.deepEqual(r.commands, ['OPEN_RETURN_PATH', 'PING']);
  assertRefused(r, 'QEMU_STREAM_UNSUPPORTED', 'return-path', /return path/);
  await sourceStillRuns(r);
});

test('tls: a TLS migration (PSK credentials) is refused at its ClientHello', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const creds = join(dir.path, 'psk');
  mkdirSync(creds);
  writeFileSync(join(creds, 'keys.psk'), `qemu:${randomBytes(32).toString('hex')}\n`);
  await guest!.qemu.qmp.execute('object-add', { 'qom-type': 'tls-creds-psk', id: 'tls0', endpoint: 'client', dir: creds });
  const r = await migrateThroughParser({ parameters: { 'tls-creds': 'tls0' }, reset: { 'tls-creds': '' } });
  assertRefused(r, 'QEMU_STREAM_NOT_QEMU', 'tls', /TLS handshake/);
  await sourceStillRuns(r);
});
