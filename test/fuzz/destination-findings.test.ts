/**
 * What the migration fuzzer found in the destination, each kept as a test:
 * a HELLO decided a file path (the guest's name became its state dir, "../"
 * included), and every refused attempt that got past WELCOME left its state dir
 * and map database behind (unbounded: the name is the peer's to choose).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { listenIncoming } from '../../src/migrate/destination/index.ts';
import { asHello } from '../../src/wire/messages.ts';
import { makeDiskImage } from '../../src/demo/disk-image.ts';
import { validHello, MIGRATION_TERMINATOR } from '../../bench/fuzz/migration-session.ts';
import { runSession } from '../../bench/fuzz/connection.ts';
import { followMigration } from '../../bench/fuzz/replies.ts';
import { LivemigError } from '../../src/errors.ts';
import { tempDir, waitFor } from '../helpers/processes.ts';

const MiB = 1 << 20;
const dir = tempDir();
after(() => dir.cleanup());
const disk = join(dir.path, 'disk.img');
makeDiskImage(disk, 32 * MiB);

/** A valid HELLO (from the fuzzer's builder) with the guest's name replaced, framed. */
function helloNamed(name: string): { frame: Buffer[]; hello: Record<string, any> } {
  const hello: Record<string, any> = validHello(5, { memoryBytes: 8 * MiB, disk: readFileSync(disk), diskSpec: disk, maxFrames: 0 });
  hello.guest.name = name;
  const payload = Buffer.from(JSON.stringify(hello));
  const h = Buffer.alloc(8);
  h.writeUInt16BE(1, 0);
  h.writeUInt32BE(payload.length, 4);
  return { frame: [h, payload], hello };
}

async function attempt(stateRoot: string, name: string): Promise<string[]> {
  mkdirSync(stateRoot, { recursive: true });
  const incoming = await listenIncoming({ host: '127.0.0.1', port: 0, disk, stateDir: (n) => join(stateRoot, 'states', `livemig-${n}`), hold: true });
  try {
    const codes: string[] = [];
    const out = await runSession(incoming.port, '127.0.0.1', { bytes: helloNamed(name).frame }, { quietMs: 500, boundMs: 30_000, terminator: MIGRATION_TERMINATOR }, followMigration((c) => codes.push(c)));
    assert.equal(out.closed, true);
    await waitFor(() => incoming.state() === 'failed', 'the destination to clean up after the refused attempt');
    return codes;
  } finally {
    incoming.close();
  }
}

test('a guest name that could name another path is refused in HELLO, and nothing is created for it', async () => {
  for (const name of ['../../escaped', '/abs', 'a/b', '.hidden', '..', '']) {
    assert.throws(() => asHello(helloNamed(name).hello), (e: unknown) => e instanceof LivemigError && e.code === 'MIGRATE_PROTOCOL', name);
  }
  assert.equal(asHello(helloNamed('vm-1.prod_2').hello).guest.name, 'vm-1.prod_2');
  const root = join(dir.path, 'escape');
  const codes = await attempt(root, '../../escaped');
  assert.deepEqual(codes, ['MIGRATE_PROTOCOL']);
  assert.equal(existsSync(join(root, 'escaped')), false, 'no directory outside the state root');
  assert.deepEqual(readdirSync(root), []);
});

test('an attempt refused after WELCOME leaves no state dir or map database behind', async () => {
  const root = join(dir.path, 'leftovers');
  const codes = await attempt(root, 'refused-guest');
  assert.deepEqual(codes, ['MIGRATE_PROTOCOL'], 'the terminator frame was refused after the handshake');
  assert.deepEqual(existsSync(join(root, 'states')) ? readdirSync(join(root, 'states')) : [], []);
});
