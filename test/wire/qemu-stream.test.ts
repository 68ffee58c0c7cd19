/**
 * The QEMU stream codecs (docs/protocol.md, "QEMU streams"): a frame built from stream
 * bytes and reference runs decodes to the same bytes and runs, whatever the frame size;
 * every malformed payload is MIGRATE_PROTOCOL; HELLO's stream field is validated.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  QemuStreamFrame, decodeQemuStream, encodeQemuAck, decodeQemuAck, encodeRefRequest, decodeRefRequest, encodeRefData, decodeRefData,
  QEMU_ENTRY, PAGE_SIZE, asHello, type QemuEntry,
} from '../../src/wire/index.ts';

const protocolError = { code: 'MIGRATE_PROTOCOL' };

function decodeAll(payloads: Buffer[], diskBlocks = 1000): QemuEntry[] {
  const out: QemuEntry[] = [];
  for (const p of payloads) decodeQemuStream(p, diskBlocks, (e) => out.push(e));
  return out;
}

test('stream bytes split over frames of any size come back whole, references in their place', () => {
  const bytes = randomBytes(10_000);
  const hash = randomBytes(16);
  for (const target of [64, 1000, 1 << 20]) {
    const f = new QemuStreamFrame(target);
    const frames: Buffer[] = [];
    const put = (data: Buffer) => {
      let at = f.bytes(data);
      while (at < data.length) (frames.push(f.take()), (at += f.bytes(data.subarray(at))));
    };
    put(bytes.subarray(0, 6000));
    f.ref(0x7000, 42, 3, hash);
    if (f.full) frames.push(f.take());
    put(bytes.subarray(6000));
    frames.push(f.take());
    assert.ok(frames.every((p) => p.length <= target + 41), `frames stay near ${target} bytes`);
    const entries = decodeAll(frames);
    const refAt = entries.findIndex((e) => e.kind === QEMU_ENTRY.REF_RUN);
    const data = (es: QemuEntry[]) => Buffer.concat(es.map((e) => (e.kind === QEMU_ENTRY.BYTES ? e.data : Buffer.alloc(0))));
    assert.ok(data(entries.slice(0, refAt)).equals(bytes.subarray(0, 6000)));
    assert.ok(data(entries.slice(refAt + 1)).equals(bytes.subarray(6000)));
    assert.deepEqual({ ...entries[refAt], hash: undefined }, { kind: QEMU_ENTRY.REF_RUN, offset: 0x7000, block: 42, count: 3, hash: undefined });
    assert.ok((entries[refAt] as { hash: Buffer }).hash.equals(hash));
  }
});

test('a frame never holds an empty BYTES entry, and 64-bit fields above 2^32 survive', () => {
  const f = new QemuStreamFrame();
  f.bytes(Buffer.alloc(0));
  f.ref(2 ** 40, 2 ** 33, 64, Buffer.alloc(16));
  const [e] = decodeAll([f.take()], 2 ** 34);
  assert.equal(e.kind, QEMU_ENTRY.REF_RUN);
  assert.deepEqual([(e as { offset: number }).offset, (e as { block: number }).block], [2 ** 40, 2 ** 33]);
});

function refEntry(offset: number, block: number, count: number, bodyLength = 36): Buffer {
  const b = Buffer.alloc(5 + bodyLength);
  b[0] = QEMU_ENTRY.REF_RUN;
  b.writeUInt32BE(bodyLength, 1);
  if (bodyLength >= 36) {
    b.writeUInt32BE(Math.floor(offset / 2 ** 32), 5);
    b.writeUInt32BE(offset >>> 0, 9);
    b.writeUInt32BE(Math.floor(block / 2 ** 32), 13);
    b.writeUInt32BE(block >>> 0, 17);
    b.writeUInt32BE(count, 21);
  }
  return b;
}

test('malformed QEMU_STREAM payloads are protocol errors', () => {
  const cases: [string, Buffer][] = [
    ['an unknown kind', Buffer.from([9, 0, 0, 0, 1, 0])],
    ['a header cut short', Buffer.from([1, 0, 0])],
    ['a body past the frame', Buffer.from([1, 0, 0, 0, 9, 1, 2])],
    ['an empty BYTES entry', Buffer.from([1, 0, 0, 0, 0])],
    ['a REF_RUN body of the wrong length', refEntry(0, 0, 1, 35)],
    ['a run of 0 pages', refEntry(0, 0, 0)],
    ['a run of 65 pages', refEntry(0, 0, 65)],
    ['an offset not page aligned', refEntry(100, 0, 1)],
    ['blocks past the end of the disk', refEntry(0, 999, 2)],
    ['an offset of 2^53 or more', refEntry(2 ** 53, 0, 1)],
  ];
  for (const [what, payload] of cases) assert.throws(() => decodeAll([payload]), protocolError, what);
});

test('QEMU_ACK, QEMU_REF_REQUEST and QEMU_REF_DATA round-trip and refuse what is malformed', () => {
  assert.deepEqual(decodeQemuAck(encodeQemuAck({ refPages: 2 ** 40 + 5, streamBytes: 2 ** 45 + 3 })), { refPages: 2 ** 40 + 5, streamBytes: 2 ** 45 + 3 });
  assert.throws(() => decodeQemuAck(Buffer.alloc(8)), protocolError);
  const ranges: [number, number][] = [[0, 64], [2 ** 35, 1]];
  assert.deepEqual(decodeRefRequest(encodeRefRequest(ranges)), ranges);
  assert.throws(() => decodeRefRequest(encodeRefRequest([])), protocolError, 'an empty request');
  assert.throws(() => decodeRefRequest(encodeRefRequest([[0, 65]])), protocolError, 'a range over 64 pages');
  assert.throws(() => decodeRefRequest(encodeRefRequest([[0, 1]]).subarray(0, 10)), protocolError);
  const pages = randomBytes(3 * PAGE_SIZE);
  const back = decodeRefData(encodeRefData(7, pages));
  assert.deepEqual([back.first, back.pages], [7, 3]);
  assert.ok(back.data.equals(pages));
  assert.throws(() => decodeRefData(encodeRefData(7, pages).subarray(0, 100)), protocolError);
});

const hello = (stream: unknown, memoryBytes = 3 * PAGE_SIZE) => ({
  protocol: 'livemig', versionMin: 3, versionMax: 3, capabilities: ['qemu-stream', 'return-path'], key: 'ab'.repeat(32), strategy: 'p2b',
  guest: { name: 'vm', workload: 'qemu', options: {}, memoryBytes, pageSize: PAGE_SIZE, regions: [{ firstPage: 0, pages: memoryBytes / PAGE_SIZE }] },
  storage: { spec: 'nbd://nas/vm', description: 'nbd', size: 1 << 20, sample: [] },
  ...(stream === undefined ? {} : { stream }),
});

test('HELLO.stream is optional, and validated when present: kind, format, RAM blocks adding up to the guest\'s memory', () => {
  assert.equal(asHello(hello(undefined)).stream, undefined);
  const ok = { kind: 'qemu', format: 3, ramBlocks: [{ id: 'pc.ram', bytes: 2 * PAGE_SIZE }, { id: '/rom@etc/acpi/rsdp', bytes: 36 }] };
  assert.deepEqual(asHello(hello(ok)).stream, ok);
  const bad: [string, unknown][] = [
    ['another kind', { ...ok, kind: 'xen' }],
    ['blocks that do not add up', { ...ok, ramBlocks: [{ id: 'pc.ram', bytes: PAGE_SIZE }] }],
    ['an empty block id', { ...ok, ramBlocks: [{ id: '', bytes: 3 * PAGE_SIZE }] }],
    ['a block id of 256 characters', { ...ok, ramBlocks: [{ id: 'x'.repeat(256), bytes: 3 * PAGE_SIZE }] }],
    ['a block of 0 bytes', { ...ok, ramBlocks: [{ id: 'a', bytes: 0 }, { id: 'b', bytes: 3 * PAGE_SIZE }] }],
    ['more than 4096 blocks', { ...ok, ramBlocks: Array.from({ length: 4097 }, (_, i) => ({ id: `b${i}`, bytes: 1 })) }],
    ['a format that is no integer', { ...ok, format: '3' }],
    ['not an object', 'qemu'],
  ];
  for (const [what, stream] of bad) assert.throws(() => asHello(hello(stream, what === 'more than 4096 blocks' ? 4097 * PAGE_SIZE : 3 * PAGE_SIZE)), protocolError, what);
});
