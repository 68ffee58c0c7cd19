/**
 * Malformed and hostile input to our server, written as raw bytes on a socket.
 * Each case gets the reply doc/proto.md demands, or a clean disconnect; the
 * server keeps serving everyone else and the file behind it is untouched.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { OPT, REP, CMD, CMD_FLAG, ERRNO, TF, STRUCTURED_REPLY_MAGIC, SIMPLE_REPLY_MAGIC, REPLY_TYPE, REPLY_FLAG_DONE, NbdClient, NbdError } from '../../nbd/index.ts';
import { tempDir, waitFor } from '../helpers/processes.ts';
import { startOwnServer, type OwnServer } from '../helpers/servers.ts';
import { RawPeer, u16, u32, u64 } from '../helpers/raw-peer.ts';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;
const dir = tempDir();
const file = join(dir.path, 'disk.img');
const roFile = join(dir.path, 'ro.img');
const original = randomFillSync(Buffer.alloc(SIZE));
let srv: OwnServer;

before(async () => {
  writeFileSync(file, original);
  writeFileSync(roFile, original);
  srv = await startOwnServer(dir.path, [{ name: 'disk', file }, { name: 'ro', file: roFile, readOnly: true }], { maxRequest: MiB });
});
after(async () => {
  await srv?.close();
  dir.cleanup();
});

const connect = () => RawPeer.connect(srv.socket);

/** After every case: another client still gets correct data, and the file is unchanged. */
async function serverStillHealthy(): Promise<void> {
  const c = await NbdClient.connect(srv.uri('disk'));
  try {
    assert.ok((await c.read(0, SIZE)).equals(original), 'export content changed');
  } finally {
    await c.close();
  }
  assert.ok(readFileSync(file).equals(original), 'file changed');
}

async function expectOptionError(peer: RawPeer, opt: number, data: Buffer, type: number): Promise<void> {
  peer.sendOption(opt, data);
  const r = await peer.optionReply();
  assert.equal(r.opt, opt);
  assert.equal(r.type, type, `option ${opt}: expected reply ${type}, got ${r.type} (${r.data.toString()})`);
}

test('handshake: unknown client flags end the session', async () => {
  const peer = await connect();
  await peer.greet(0x80);
  assert.equal(await peer.waitClosed(), true);
  await serverStillHealthy();
});

test('handshake: a bad option magic ends the session', async () => {
  const peer = await connect();
  await peer.greet();
  peer.send(u64(0x1234n), u32(OPT.LIST), u32(0));
  assert.equal(await peer.waitClosed(), true);
  await serverStillHealthy();
});

test('handshake: unknown and unsupported options get NBD_REP_ERR_UNSUP, and haggling continues', async () => {
  const peer = await connect();
  await peer.greet();
  await expectOptionError(peer, 0x7777, Buffer.from('whatever'), REP.ERR_UNSUP);
  await expectOptionError(peer, OPT.SET_META_CONTEXT, Buffer.alloc(8), REP.ERR_UNSUP);
  await expectOptionError(peer, OPT.STARTTLS, Buffer.alloc(0), REP.ERR_POLICY);
  const { size } = await (async () => {
    const name = Buffer.from('disk');
    peer.sendOption(OPT.INFO, Buffer.concat([u32(name.length), name, u16(0)]));
    let size = -1;
    for (;;) {
      const r = await peer.optionReply();
      if (r.type === REP.ACK) return { size };
      if (r.data.readUInt16BE(0) === 0) size = Number(r.data.readBigUInt64BE(2));
    }
  })();
  assert.equal(size, SIZE);
  peer.destroy();
});

test('handshake: malformed option data gets NBD_REP_ERR_INVALID', async () => {
  const peer = await connect();
  await peer.greet();
  await expectOptionError(peer, OPT.LIST, Buffer.from('x'), REP.ERR_INVALID);
  await expectOptionError(peer, OPT.STRUCTURED_REPLY, Buffer.from('x'), REP.ERR_INVALID);
  // Name length claims more bytes than the option carries.
  await expectOptionError(peer, OPT.GO, Buffer.concat([u32(100), Buffer.from('disk'), u16(0)]), REP.ERR_INVALID);
  // Info request count does not match the data length.
  await expectOptionError(peer, OPT.INFO, Buffer.concat([u32(4), Buffer.from('disk'), u16(3), u16(3)]), REP.ERR_INVALID);
  await expectOptionError(peer, OPT.GO, Buffer.alloc(3), REP.ERR_INVALID);
  peer.destroy();
  await serverStillHealthy();
});

test('handshake: GO for an unknown export gets NBD_REP_ERR_UNKNOWN; EXPORT_NAME for one ends the session', async () => {
  const peer = await connect();
  await peer.greet();
  await expectOptionError(peer, OPT.GO, Buffer.concat([u32(4), Buffer.from('nope'), u16(0)]), REP.ERR_UNKNOWN);
  peer.sendOption(OPT.EXPORT_NAME, Buffer.from('nope'));
  assert.equal(await peer.waitClosed(), true);
  await assert.rejects(NbdClient.connect(srv.uri('nope')), (e: unknown) => e instanceof NbdError && e.code === 'NBD_NO_EXPORT');
});

test('handshake: an option claiming a huge length is refused without reading it into memory', async () => {
  const peer = await connect();
  await peer.greet();
  peer.sendOption(OPT.LIST, Buffer.alloc(0), 100 * MiB);
  peer.send(Buffer.alloc(100 * MiB)); // the server drains it
  const r = await peer.optionReply();
  assert.equal(r.type, REP.ERR_TOO_BIG);
  await expectOptionError(peer, 0x7777, Buffer.alloc(0), REP.ERR_UNSUP); // still in sync
  peer.destroy();
});

test('handshake: NBD_OPT_ABORT is acknowledged and the session ends', async () => {
  const peer = await connect();
  await peer.greet();
  peer.sendOption(OPT.ABORT);
  const r = await peer.optionReply();
  assert.equal(r.type, REP.ACK);
  assert.equal(await peer.waitClosed(), true);
});

test('handshake: EXPORT_NAME without NO_ZEROES gets the 124 zero bytes', async () => {
  const peer = await connect();
  await peer.greet(1); // fixed newstyle only
  peer.sendOption(OPT.EXPORT_NAME, Buffer.from('disk'));
  const tail = await peer.reader.read(134);
  assert.equal(Number(tail.readBigUInt64BE(0)), SIZE);
  assert.ok(tail.readUInt16BE(8) & TF.HAS_FLAGS);
  assert.ok(tail.subarray(10).every((b) => b === 0));
  peer.sendRequest(CMD.READ, 7, 0, 16);
  const r = await peer.simpleReply();
  assert.deepEqual(r, { magic: SIMPLE_REPLY_MAGIC, errno: 0, handle: 7 });
  assert.ok((await peer.reader.read(16)).equals(original.subarray(0, 16)));
  peer.destroy();
});

/** Opens a transmission session on `name` for request-level cases. */
async function session(name = 'disk', structured = false): Promise<RawPeer> {
  const peer = await connect();
  await peer.go(name, structured);
  return peer;
}

const requestCases: { name: string; send: (p: RawPeer) => void; errno: number; export?: string }[] = [
  { name: 'unknown command', send: (p) => p.sendRequest(99, 1, 0, 0), errno: ERRNO.EINVAL },
  { name: 'NBD_CMD_CACHE (not advertised)', send: (p) => p.sendRequest(CMD.CACHE, 1, 0, 4096), errno: ERRNO.EINVAL },
  { name: 'block status without a meta context', send: (p) => p.sendRequest(CMD.BLOCK_STATUS, 1, 0, 4096), errno: ERRNO.EINVAL },
  { name: 'unknown command flag', send: (p) => p.sendRequest(CMD.READ, 1, 0, 512, 1 << 9), errno: ERRNO.EINVAL },
  { name: 'DF flag not advertised', send: (p) => p.sendRequest(CMD.READ, 1, 0, 512, CMD_FLAG.DF), errno: ERRNO.EINVAL },
  { name: 'read past the end', send: (p) => p.sendRequest(CMD.READ, 1, SIZE - 100, 200), errno: ERRNO.EINVAL },
  { name: 'read at an offset beyond 2^63', send: (p) => p.sendRequest(CMD.READ, 1, 0xffff_ffff_ffff_f000n, 4096), errno: ERRNO.EINVAL },
  { name: 'read over the maximum request size', send: (p) => p.sendRequest(CMD.READ, 1, 0, 2 * MiB), errno: ERRNO.EINVAL },
  { name: 'write past the end', send: (p) => p.sendRequest(CMD.WRITE, 1, SIZE - 10, 20, 0, Buffer.alloc(20, 0xee)), errno: ERRNO.ENOSPC },
  { name: 'write-zeroes past the end', send: (p) => p.sendRequest(CMD.WRITE_ZEROES, 1, SIZE, 4096), errno: ERRNO.ENOSPC },
  { name: 'trim past the end', send: (p) => p.sendRequest(CMD.TRIM, 1, SIZE - 1, 2), errno: ERRNO.EINVAL },
  { name: 'flush with a length', send: (p) => p.sendRequest(CMD.FLUSH, 1, 0, 10), errno: ERRNO.EINVAL },
  { name: 'write to a read-only export', send: (p) => p.sendRequest(CMD.WRITE, 1, 0, 4, 0, Buffer.alloc(4, 0xee)), errno: ERRNO.EPERM, export: 'ro' },
  { name: 'trim on a read-only export', send: (p) => p.sendRequest(CMD.TRIM, 1, 0, 4096), errno: ERRNO.EPERM, export: 'ro' },
  { name: 'write-zeroes on a read-only export', send: (p) => p.sendRequest(CMD.WRITE_ZEROES, 1, 0, 4096), errno: ERRNO.EPERM, export: 'ro' },
];

for (const c of requestCases) {
  test(`transmission: ${c.name} gets ${Object.entries(ERRNO).find(([, v]) => v === c.errno)![0]} and the session goes on`, async () => {
    const peer = await session(c.export ?? 'disk');
    c.send(peer);
    const r = await peer.simpleReply();
    assert.equal(r.magic, SIMPLE_REPLY_MAGIC);
    assert.equal(r.errno, c.errno);
    assert.equal(r.handle, 1);
    // The stream is still in sync: a valid read right after works.
    peer.sendRequest(CMD.READ, 2, 4096, 8);
    assert.deepEqual(await peer.simpleReply(), { magic: SIMPLE_REPLY_MAGIC, errno: 0, handle: 2 });
    assert.ok((await peer.reader.read(8)).equals(original.subarray(4096, 4104)));
    peer.destroy();
    assert.ok(readFileSync(roFile).equals(original), 'read-only file changed');
    await serverStillHealthy();
  });
}

test('transmission: an oversized write payload is drained and refused, keeping the stream in sync', async () => {
  const peer = await session();
  peer.sendRequest(CMD.WRITE, 1, 0, 3 * MiB, 0, Buffer.alloc(3 * MiB, 0xee));
  assert.deepEqual(await peer.simpleReply(), { magic: SIMPLE_REPLY_MAGIC, errno: ERRNO.EINVAL, handle: 1 });
  peer.sendRequest(CMD.READ, 2, 0, 4);
  assert.equal((await peer.simpleReply()).errno, 0);
  assert.ok((await peer.reader.read(4)).equals(original.subarray(0, 4)));
  peer.destroy();
  await serverStillHealthy();
});

test('transmission: with structured replies a bad read gets an error chunk with a message', async () => {
  const peer = await session('disk', true);
  peer.sendRequest(CMD.READ, 5, SIZE, 4096);
  const h = await peer.reader.read(20);
  assert.equal(h.readUInt32BE(0), STRUCTURED_REPLY_MAGIC);
  assert.equal(h.readUInt16BE(4), REPLY_FLAG_DONE);
  assert.equal(h.readUInt16BE(6), REPLY_TYPE.ERROR);
  assert.equal(Number(h.readBigUInt64BE(8)), 5);
  const body = await peer.reader.read(h.readUInt32BE(16));
  assert.equal(body.readUInt32BE(0), ERRNO.EINVAL);
  assert.match(body.toString('utf8', 6, 6 + body.readUInt16BE(4)), /past the end/);
  peer.destroy();
});

test('transmission: a bad request magic ends the session', async () => {
  const peer = await session();
  peer.send(Buffer.alloc(28, 0x41));
  assert.equal(await peer.waitClosed(), true);
  await serverStillHealthy();
});

test('transmission: a client vanishing mid-write leaves the file untouched and others served', async () => {
  const before = srv.server.connections;
  const peer = await session();
  peer.sendRequest(CMD.WRITE, 1, 0, 65536, 0, Buffer.alloc(30000, 0xee)); // half the payload
  await new Promise((r) => peer.socket.write(Buffer.alloc(0), r)); // handed to the socket: the server gets it before the close
  peer.destroy();
  await waitFor(() => srv.server.connections <= before, 'the server to drop the vanished client');
  await serverStillHealthy();
});

test('transmission: NBD_CMD_DISC answers requests in flight, then closes', async () => {
  const peer = await session();
  for (let i = 0; i < 8; i++) peer.sendRequest(CMD.READ, 100 + i, i * 4096, 4096);
  peer.sendRequest(CMD.DISC, 0, 0, 0);
  const handles: number[] = [];
  for (let i = 0; i < 8; i++) {
    const r = await peer.simpleReply();
    assert.equal(r.errno, 0);
    handles.push(r.handle);
    assert.ok((await peer.reader.read(4096)).equals(original.subarray((r.handle - 100) * 4096, (r.handle - 99) * 4096)));
  }
  assert.deepEqual(handles.sort(), [100, 101, 102, 103, 104, 105, 106, 107]);
  assert.equal(await peer.waitClosed(), true);
});
