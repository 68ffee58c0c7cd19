/**
 * Our client against a misbehaving server: a scripted peer on a real TCP socket
 * breaks the protocol one way per case. Every case must end in the client's
 * stable NbdError code, within a bounded time, without reading what a hostile
 * length claims, without an unhandled rejection, and (in transmission) with the
 * client hanging up, as doc/proto.md asks of a client facing inconsistent replies.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  NbdClient, NbdError, NbdRequestError, OPT, REP, INFO, TF, ERRNO, CMD, REPLY_TYPE, REPLY_FLAG_DONE,
  FLAG_FIXED_NEWSTYLE, NBDMAGIC, type NbdErrorCode,
} from '../../nbd/index.ts';
import { ScriptedServer, type ScriptPeer, type Request } from '../helpers/scripted-server.ts';
import { u16, u32, u64 } from '../helpers/raw-peer.ts';

const MiB = 1024 * 1024;
/** What a hostile length claims, and the most a client may swallow of it before hanging up. */
const HUGE = 0xffff_fff0;
const SWALLOW_LIMIT = 64 * MiB;
const CASE_TIMEOUT = { timeout: 15_000 };

const unhandled: unknown[] = [];
process.on('unhandledRejection', (e) => unhandled.push(e));
after(() => assert.deepEqual(unhandled, [], 'unhandled rejections'));

const servers: ScriptedServer[] = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function serve(...scripts: ((p: ScriptPeer) => Promise<void>)[]): Promise<ScriptedServer> {
  const s = await ScriptedServer.start(...scripts);
  servers.push(s);
  return s;
}

const isCode = (code: NbdErrorCode, message?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof NbdError, `expected an NbdError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  if (message) assert.match(e.message, message);
  return true;
};

const goData = (p: ScriptPeer) => p.expectOption(OPT.GO);

// ---- negotiation -------------------------------------------------------------

const handshakeCases: { name: string; code: NbdErrorCode; message?: RegExp; script: (p: ScriptPeer) => Promise<void>; flood?: boolean }[] = [
  { name: 'a bad greeting magic', code: 'NBD_PROTOCOL', message: /not an NBD server/, script: async (p) => void p.send(Buffer.alloc(18, 0x41)) },
  { name: 'an oldstyle greeting', code: 'NBD_HANDSHAKE', message: /oldstyle/, script: async (p) => void p.send(u64(NBDMAGIC), u64(0x00420281861253n), u16(0)) },
  { name: 'a server without fixed newstyle', code: 'NBD_HANDSHAKE', message: /fixed newstyle/, script: async (p) => void p.send(u64(NBDMAGIC), u64(0x49484156454f5054n), u16(0)) },
  { name: 'a server that closes after its greeting', code: 'NBD_HANDSHAKE', message: /closed/, script: async (p) => {
    await p.greet();
    p.socket.end();
  } },
  { name: 'a bad option reply magic', code: 'NBD_PROTOCOL', message: /option reply magic/, script: async (p) => {
    await p.greet();
    await p.expectOption(OPT.STRUCTURED_REPLY);
    p.send(u64(0x1234n), u32(OPT.STRUCTURED_REPLY), u32(REP.ACK), u32(0));
  } },
  { name: 'a reply to another option', code: 'NBD_PROTOCOL', message: /replied to option 7, expected 8/, script: async (p) => {
    await p.greet();
    await p.expectOption(OPT.STRUCTURED_REPLY);
    p.reply(OPT.GO, REP.ACK);
  } },
  { name: 'an option reply claiming 4 GiB', code: 'NBD_PROTOCOL', message: /implausible/, flood: true, script: async (p) => {
    await p.greet();
    await p.expectOption(OPT.STRUCTURED_REPLY);
    p.reply(OPT.STRUCTURED_REPLY, REP.ACK, Buffer.alloc(0), HUGE);
  } },
  { name: 'a non-error, non-ACK reply to STRUCTURED_REPLY', code: 'NBD_PROTOCOL', script: async (p) => {
    await p.greet();
    await p.expectOption(OPT.STRUCTURED_REPLY);
    p.reply(OPT.STRUCTURED_REPLY, REP.SERVER);
  } },
  { name: 'GO answered "export not found"', code: 'NBD_NO_EXPORT', message: /export "": export not found: no such disk/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.ERR_UNKNOWN, Buffer.from('no such disk'));
  } },
  { name: 'GO refused by policy', code: 'NBD_HANDSHAKE', message: /refused by policy: go away/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.ERR_POLICY, Buffer.from('go away'));
  } },
  { name: 'GO acknowledged without NBD_INFO_EXPORT', code: 'NBD_PROTOCOL', message: /without NBD_INFO_EXPORT/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.ACK);
  } },
  { name: 'a short NBD_INFO_EXPORT', code: 'NBD_PROTOCOL', message: /NBD_INFO_EXPORT of 6 bytes/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.INFO, Buffer.concat([u16(INFO.EXPORT), u32(1)]));
  } },
  { name: 'an empty NBD_REP_INFO', code: 'NBD_PROTOCOL', message: /short NBD_REP_INFO/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.INFO);
  } },
  { name: 'an export size beyond 2^53', code: 'NBD_PROTOCOL', message: /beyond 2\^53/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.INFO, Buffer.concat([u16(INFO.EXPORT), u64(2n ** 60n), u16(TF.HAS_FLAGS)]));
  } },
  { name: 'a maximum block size of 0', code: 'NBD_PROTOCOL', message: /impossible block sizes/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.INFO, Buffer.concat([u16(INFO.BLOCK_SIZE), u32(1), u32(4096), u32(0)]));
  } },
  { name: 'a minimum block size that is not a power of two', code: 'NBD_PROTOCOL', message: /impossible block sizes/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.INFO, Buffer.concat([u16(INFO.BLOCK_SIZE), u32(3), u32(4096), u32(MiB)]));
  } },
  { name: 'an unexpected reply type to GO', code: 'NBD_PROTOCOL', message: /unexpected reply 4 to NBD_OPT_GO/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.META_CONTEXT, u32(1));
  } },
  { name: 'a server that closes instead of answering EXPORT_NAME', code: 'NBD_NO_EXPORT', message: /not found/, script: async (p) => {
    await negotiateUntilGo(p);
    p.reply(OPT.GO, REP.ERR_UNSUP);
    await p.expectOption(OPT.EXPORT_NAME);
    p.socket.end();
  } },
];

/** Greeting and structured replies done; the client's NBD_OPT_GO has been read. */
async function negotiateUntilGo(p: ScriptPeer): Promise<void> {
  await p.greet();
  await p.expectOption(OPT.STRUCTURED_REPLY);
  p.reply(OPT.STRUCTURED_REPLY, REP.ACK);
  await goData(p);
}

for (const c of handshakeCases) {
  test(`negotiation: ${c.name} fails with ${c.code}`, CASE_TIMEOUT, async () => {
    const srv = await serve(async (p) => {
      await c.script(p);
      if (c.flood) await p.flood(4 * SWALLOW_LIMIT);
      await p.clientGone;
    });
    await assert.rejects(NbdClient.connect(srv.uri()), isCode(c.code, c.message));
    await srv.peers[0].clientGone; // the client hung up, it did not leave the socket open
    assert.equal(await srv.outcomes[0], undefined, 'the script itself failed');
    if (c.flood) assert.ok(srv.peers[0].sent < SWALLOW_LIMIT, `client kept reading a hostile claim: ${srv.peers[0].sent} bytes`);
  });
}

test('negotiation: a server that never greets is given up after connectTimeoutMs', CASE_TIMEOUT, async () => {
  const srv = await serve((p) => p.clientGone);
  await assert.rejects(NbdClient.connect(srv.uri(), { connectTimeoutMs: 300 }), isCode('NBD_HANDSHAKE', /within 300 ms/));
  await srv.peers[0].clientGone;
});

test('negotiation: a server that stalls mid-haggling is given up after connectTimeoutMs', CASE_TIMEOUT, async () => {
  const srv = await serve(async (p) => {
    await negotiateUntilGo(p);
    await p.clientGone;
  });
  await assert.rejects(NbdClient.connect(srv.uri(), { connectTimeoutMs: 300 }), isCode('NBD_HANDSHAKE', /within 300 ms/));
});

test('negotiation: listing exports against a broken NBD_REP_SERVER fails with NBD_PROTOCOL', CASE_TIMEOUT, async () => {
  const srv = await serve(async (p) => {
    await p.greet();
    await p.expectOption(OPT.LIST);
    p.reply(OPT.LIST, REP.SERVER, Buffer.concat([u32(100), Buffer.from('short')]));
    await p.clientGone;
  });
  await assert.rejects(NbdClient.list(srv.uri()), isCode('NBD_PROTOCOL', /overruns/));
});

test('negotiation: listing exports from a server that hangs up fails with NBD_HANDSHAKE', CASE_TIMEOUT, async () => {
  const srv = await serve(async (p) => {
    await p.greet();
    await p.expectOption(OPT.LIST);
    p.socket.end();
  });
  await assert.rejects(NbdClient.list(srv.uri()), isCode('NBD_HANDSHAKE', /closed/));
});

// ---- EXPORT_NAME fallback and refused structured replies ------------------------

/** Serves READs (simple replies) from `disk` until the client disconnects. */
async function serveSimpleReads(p: ScriptPeer, disk: Buffer): Promise<void> {
  for (;;) {
    const r = await p.request();
    if (r.type === CMD.DISC) return;
    assert.equal(r.type, CMD.READ);
    p.simple(r.handle, 0, disk.subarray(r.offset, r.offset + r.length));
  }
}

for (const noZeroes of [true, false]) {
  test(`fallback: a server refusing NBD_OPT_GO (ERR_UNSUP) is entered with EXPORT_NAME (${noZeroes ? 'NO_ZEROES' : '124 zero bytes'})`, CASE_TIMEOUT, async () => {
    const disk = Buffer.from('0123456789abcdef'.repeat(256));
    let askedFor = '';
    const srv = await serve(async (p) => {
      const clientFlags = await p.greet(FLAG_FIXED_NEWSTYLE | (noZeroes ? 2 : 0));
      assert.equal(clientFlags & 2, noZeroes ? 2 : 0, 'client must not claim NO_ZEROES unless offered');
      await p.expectOption(OPT.STRUCTURED_REPLY);
      p.reply(OPT.STRUCTURED_REPLY, REP.ERR_UNSUP);
      await goData(p);
      p.reply(OPT.GO, REP.ERR_UNSUP, Buffer.from('old server'));
      askedFor = (await p.expectOption(OPT.EXPORT_NAME)).toString();
      p.send(u64(BigInt(disk.length)), u16(TF.HAS_FLAGS | TF.READ_ONLY), Buffer.alloc(noZeroes ? 0 : 124));
      await serveSimpleReads(p, disk);
    });
    const client = await NbdClient.connect(srv.uri('vm 1'));
    assert.equal(askedFor, 'vm 1');
    assert.equal(client.size, disk.length);
    assert.equal(client.readOnly, true);
    assert.equal(client.structuredReplies, false);
    assert.equal(client.blockSize.maximum, 32 * MiB, 'no block sizes advertised: the spec default');
    assert.ok((await client.read(100, 200)).equals(disk.subarray(100, 300)));
    await client.close();
    assert.equal(await srv.outcomes[0], undefined);
  });
}

// ---- transmission ----------------------------------------------------------------

type Misbehaviour = (p: ScriptPeer, r: Request) => void | Promise<void>;
const DATA = Buffer.alloc(4096, 0xab);

const transmissionCases: {
  name: string;
  code: NbdErrorCode;
  message?: RegExp;
  structured?: boolean;
  act?: (c: NbdClient) => Promise<unknown>;
  misbehave: Misbehaviour;
  flood?: boolean;
}[] = [
  { name: 'a bad reply magic', code: 'NBD_PROTOCOL', message: /bad reply magic/, misbehave: (p) => void p.send(Buffer.alloc(16, 0x41)) },
  { name: 'a reply for a request never sent', code: 'NBD_PROTOCOL', message: /unknown handle/, misbehave: (p, r) => {
    const other = Buffer.from(r.handle);
    other.writeUInt32BE(other.readUInt32BE(4) + 1000, 4);
    p.simple(other);
  } },
  { name: 'a reply handle with its high bits set', code: 'NBD_PROTOCOL', message: /unknown handle/, misbehave: (p, r) => {
    const other = Buffer.from(r.handle);
    other.writeUInt32BE(1, 0);
    p.simple(other);
  } },
  { name: 'a second reply to a request already answered', code: 'NBD_PROTOCOL', message: /unknown handle/,
    act: async (c) => {
      await c.flush();
      await c.flush();
    },
    misbehave: async (p, r) => {
      p.simple(r.handle);
      p.simple(r.handle);
    } },
  { name: 'a structured reply that was not agreed', code: 'NBD_PROTOCOL', message: /not agreed/, structured: false,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.NONE) },
  { name: 'a simple reply with data to a read after structured replies were agreed', code: 'NBD_PROTOCOL', message: /simple reply with data/,
    misbehave: (p, r) => p.simple(r.handle, 0, DATA) },
  { name: 'a data chunk shorter than its offset', code: 'NBD_PROTOCOL', message: /data chunk of 4 bytes/,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, u32(0)) },
  { name: 'a data chunk claiming 4 GiB', code: 'NBD_PROTOCOL', message: /outside its read request/, flood: true,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, u64(0n), HUGE) },
  { name: 'an error chunk claiming 4 GiB', code: 'NBD_PROTOCOL', message: /of 4294967280 bytes/, flood: true,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, Buffer.alloc(0), HUGE) },
  { name: 'a data chunk outside its read request', code: 'NBD_PROTOCOL', message: /outside its read request/,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, Buffer.concat([u64(BigInt(r.offset + 1)), DATA])) },
  { name: 'a data chunk answering a write', code: 'NBD_PROTOCOL', message: /outside its read request/,
    act: (c) => c.write(0, Buffer.alloc(512, 1)),
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, Buffer.concat([u64(0n), Buffer.alloc(512)])) },
  { name: 'a hole chunk of the wrong length', code: 'NBD_PROTOCOL', message: /hole chunk of wrong length/,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_HOLE, u64(BigInt(r.offset))) },
  { name: 'a hole chunk outside its read request', code: 'NBD_PROTOCOL', message: /hole chunk outside/,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_HOLE, Buffer.concat([u64(BigInt(r.offset)), u32(r.length + 1)])) },
  { name: 'an error chunk too short for its error', code: 'NBD_PROTOCOL', message: /error chunk too short/,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, u32(ERRNO.EIO)) },
  { name: 'an error message overrunning its chunk', code: 'NBD_PROTOCOL', message: /overruns/,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, Buffer.concat([u32(ERRNO.EIO), u16(50), Buffer.from('short')])) },
  { name: 'an unknown non-error chunk type', code: 'NBD_PROTOCOL', message: /unexpected structured reply type 77/,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, 77) },
  { name: 'a read finished with half its data', code: 'NBD_PROTOCOL', message: /2048 of 4096 bytes/,
    misbehave: (p, r) => p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, Buffer.concat([u64(BigInt(r.offset)), DATA.subarray(0, 2048)])) },
  { name: 'the server closing mid-reply', code: 'NBD_CLOSED', message: /closed/, misbehave: (p, r) => {
    p.chunk(r.handle, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, Buffer.concat([u64(BigInt(r.offset)), DATA.subarray(0, 1000)]), 8 + DATA.length);
    p.socket.end();
  } },
  { name: 'the server closing mid-reply (simple replies)', code: 'NBD_CLOSED', structured: false, misbehave: (p, r) => {
    p.simple(r.handle, 0, DATA.subarray(0, 100));
    p.socket.end();
  } },
  { name: 'the server closing with the request unanswered', code: 'NBD_CLOSED', misbehave: (p) => void p.socket.end() },
];

for (const c of transmissionCases) {
  test(`transmission: ${c.name} fails with ${c.code} and the client hangs up`, CASE_TIMEOUT, async () => {
    const srv = await serve(async (p) => {
      await p.handshake({ structured: c.structured ?? true, size: MiB });
      // With several requests in flight, misbehave on the first one.
      const r = await p.request();
      await c.misbehave(p, r);
      if (c.flood) await p.flood(4 * SWALLOW_LIMIT);
      await p.clientGone;
    });
    const client = await NbdClient.connect(srv.uri());
    const first = (c.act ?? ((cl) => cl.read(0, 4096)))(client);
    const second = client.read(8192, 4096); // in flight too: must fail as well, not hang
    await assert.rejects(first, isCode(c.code, c.message));
    await assert.rejects(second, (e: unknown) => e instanceof NbdError && (e.code === c.code || e.code === 'NBD_CLOSED'));
    await srv.peers[0].clientGone;
    // The connection is dead: later requests fail at once with the same error.
    await assert.rejects(client.read(0, 512), isCode(c.code));
    await client.close();
    assert.equal(await srv.outcomes[0], undefined, 'the script itself failed');
    if (c.flood) assert.ok(srv.peers[0].sent < SWALLOW_LIMIT, `client kept reading a hostile claim: ${srv.peers[0].sent} bytes`);
  });
}

test('transmission: error replies fail only their request; the connection goes on', CASE_TIMEOUT, async () => {
  const srv = await serve(async (p) => {
    await p.handshake({ size: MiB, flags: TF.HAS_FLAGS | TF.SEND_FLUSH });
    const read = await p.request();
    p.chunk(read.handle, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, Buffer.concat([u32(ERRNO.EIO), u16(9), Buffer.from('disk gone')]));
    const flush = await p.request();
    p.simple(flush.handle, ERRNO.ENOSPC);
    // An unknown error type (bit 15 set) still errors only its request.
    const read2 = await p.request();
    p.chunk(read2.handle, REPLY_FLAG_DONE, (1 << 15) + 99, Buffer.concat([u32(ERRNO.EPERM), u16(0)]));
    const read3 = await p.request();
    p.chunk(read3.handle, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, Buffer.concat([u64(BigInt(read3.offset)), DATA]));
    assert.equal((await p.request()).type, CMD.DISC);
  });
  const client = await NbdClient.connect(srv.uri());
  const request = (errno: number, detail?: RegExp) => (e: unknown) =>
    e instanceof NbdRequestError && e.code === 'NBD_REQUEST' && e.errno === errno && (!detail || detail.test(e.message));
  await assert.rejects(client.read(0, 4096), request(ERRNO.EIO, /EIO \(disk gone\)/));
  await assert.rejects(client.flush(), request(ERRNO.ENOSPC));
  await assert.rejects(client.read(0, 4096), request(ERRNO.EPERM));
  assert.ok((await client.read(4096, 4096)).equals(DATA));
  await client.close();
  assert.equal(await srv.outcomes[0], undefined);
});
