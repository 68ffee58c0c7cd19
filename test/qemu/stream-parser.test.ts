/**
 * The QEMU stream parser and writer on streams built here, byte by byte, in the shape
 * QEMU 7.2 writes (the recorded-stream tests check that shape against the real QEMU).
 * Chunk boundaries anywhere give the same records; every proper prefix is truncated;
 * each malformed or unsupported record is refused with its code.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QemuStreamParser, QemuStreamWriter, QemuStreamError, parseQemuStream, MAX_RECORD, type QemuRecord } from '../../src/qemu/stream/index.ts';

const page = (seed: number) => Buffer.alloc(4096, seed);
const vmdesc = JSON.stringify({ page_size: 4096, devices: [{ name: 'timer', instance_id: 0 }] });

/** Device state as QEMU ends it: a FULL section's opaque body, EOF, VMDESCRIPTION with its JSON. */
function deviceTail(): Buffer {
  const json = Buffer.from(vmdesc);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  return Buffer.concat([Buffer.from([1, 2, 3, 0x7e, 0, 0, 0, 0]), Buffer.from([0x00, 0x06]), len, json]);
}

function sampleRecords(): QemuRecord[] {
  return [
    { kind: 'header', version: 3 },
    { kind: 'configuration', machine: 'pc-i440fx-7.2', subsections: [{ name: 'configuration/uuid', version: 1, body: Buffer.alloc(16, 7) }] },
    { kind: 'section', type: 'start', sectionId: 2, idstr: 'ram', instanceId: 0, versionId: 4 },
    { kind: 'ram-mem-size', totalBytes: 3 * 4096 + (1 << 20) },
    { kind: 'ram-block', block: 'pc.ram', usedLength: 1 << 20 },
    { kind: 'ram-block', block: 'pc.rom', usedLength: 3 * 4096 },
    { kind: 'ram-eos' },
    { kind: 'footer', sectionId: 2 },
    { kind: 'section', type: 'part', sectionId: 2, idstr: 'ram', instanceId: 0, versionId: 0 },
    { kind: 'ram-page', block: 'pc.ram', offset: 0, continued: false, data: page(1) },
    { kind: 'ram-zero', block: 'pc.ram', offset: 4096, continued: true, fill: 0 },
    { kind: 'ram-page', block: 'pc.rom', offset: 8192, continued: false, data: page(2) },
    { kind: 'ram-eos' },
    { kind: 'footer', sectionId: 2 },
    { kind: 'section', type: 'end', sectionId: 2, idstr: 'ram', instanceId: 0, versionId: 0 },
    { kind: 'ram-page', block: 'pc.rom', offset: 0, continued: true, data: page(3) }, // CONTINUE across sections
    { kind: 'ram-eos' },
    { kind: 'footer', sectionId: 2 },
    { kind: 'section', type: 'full', sectionId: 0, idstr: 'timer', instanceId: 0, versionId: 2 },
    { kind: 'device-state', data: deviceTail() },
  ];
}

const sample = () => QemuStreamWriter.toBuffer(sampleRecords());

/** Parses `bytes` fed in the given chunk sizes; returns the records or the error. */
function parse(bytes: Buffer, chunk = bytes.length): { records: QemuRecord[]; error?: QemuStreamError } {
  const p = new QemuStreamParser();
  const records: QemuRecord[] = [];
  try {
    for (let i = 0; i < bytes.length; i += chunk) p.push(bytes.subarray(i, i + chunk), (r) => void records.push(r));
    p.end((r) => void records.push(r));
    return { records };
  } catch (err) {
    if (!(err instanceof QemuStreamError)) throw err;
    return { records, error: err };
  }
}

function refused(bytes: Buffer, code: string, pattern: RegExp, capability?: string): void {
  const { error } = parse(bytes);
  assert.ok(error, 'expected a refusal');
  assert.equal(error.code, code, error.message);
  assert.match(error.message, pattern);
  assert.equal(error.capability, capability);
}

/** Device-state records merged, so chunkings compare equal. */
function normalize(records: QemuRecord[]): unknown[] {
  const out: unknown[] = [];
  for (const r of records) {
    const last = out[out.length - 1] as { kind: string; data: Buffer } | undefined;
    if (r.kind === 'device-state' && last?.kind === 'device-state') last.data = Buffer.concat([last.data, r.data]);
    else out.push(r.kind === 'device-state' ? { ...r, data: Buffer.from(r.data) } : r);
  }
  return out;
}

test('parse then write gives the input back byte for byte, with every field typed', () => {
  const bytes = sample();
  const { records, error } = parse(bytes);
  assert.equal(error, undefined);
  assert.deepEqual(normalize(records.slice(0, -1)), normalize(sampleRecords()));
  assert.deepEqual(records.at(-1), { kind: 'end', eofOffset: bytes.length - vmdesc.length - 6, vmdescription: vmdesc });
  assert.ok(QemuStreamWriter.toBuffer(records).equals(bytes));
});

test('the same records whatever the chunk boundaries (1 byte, odd sizes, a page plus one)', () => {
  const bytes = sample();
  const whole = normalize(parse(bytes).records);
  for (const chunk of [1, 2, 3, 7, 100, 4095, 4097, 5000]) {
    const { records, error } = parse(bytes, chunk);
    assert.equal(error, undefined, `chunk ${chunk}: ${error?.message}`);
    assert.deepEqual(normalize(records), whole, `chunk ${chunk}`);
    assert.ok(QemuStreamWriter.toBuffer(records).equals(bytes), `chunk ${chunk}`);
  }
});

test('a page wholly inside a chunk is a view of that chunk, not a copy', () => {
  const bytes = sample();
  const p = new QemuStreamParser();
  const pages: Buffer[] = [];
  p.push(bytes, (r) => void (r.kind === 'ram-page' && pages.push(r.data)));
  assert.equal(pages.length, 3);
  for (const d of pages) assert.equal(d.buffer, bytes.buffer);
});

test('every proper prefix of a stream is refused as truncated', () => {
  const bytes = sample();
  for (let n = 0; n < bytes.length; n++) {
    const { error } = parse(bytes.subarray(0, n), 977);
    assert.equal(error?.code, 'QEMU_STREAM_TRUNCATED', `prefix of ${n} bytes: ${error?.message}`);
  }
});

test('bytes that are not a QEMU stream are refused at once', () => {
  refused(Buffer.from('GET / HTTP/1.1\r\n\r\n'), 'QEMU_STREAM_NOT_QEMU', /not a QEMU migration stream: it starts with 47455420/);
  refused(Buffer.from('160301018a010001860303', 'hex'), 'QEMU_STREAM_NOT_QEMU', /TLS/, 'tls');
  refused(Buffer.from('1122334400000001', 'hex'), 'QEMU_STREAM_NOT_QEMU', /multifd channel/, 'multifd');
  refused(Buffer.from('5145564d00000002', 'hex'), 'QEMU_STREAM_UNSUPPORTED', /version 2/);
});

/** The sample with the bytes at `offset` replaced. */
function patched(offset: number, bytes: number[]): Buffer {
  const b = Buffer.from(sample());
  Buffer.from(bytes).copy(b, offset);
  return b;
}

/** Offset of the first PART section's first RAM record (its 8-byte address). */
function firstPageOffset(): number {
  return QemuStreamWriter.toBuffer(sampleRecords().slice(0, 9)).length;
}

test('an unknown RAM flag is refused, naming the flag', () => {
  refused(patched(firstPageOffset() + 6, [0x04, 0x08]), 'QEMU_STREAM_UNSUPPORTED', /unknown RAM record flag 0x400/);
});

test('RAM flags of unsupported capabilities are refused, naming the capability', () => {
  const at = firstPageOffset() + 6;
  refused(patched(at, [0x00, 0x48]), 'QEMU_STREAM_UNSUPPORTED', /XBZRLE/, 'xbzrle');
  refused(patched(at, [0x01, 0x08]), 'QEMU_STREAM_UNSUPPORTED', /compressed page/, 'compress');
  refused(patched(at, [0x02, 0x08]), 'QEMU_STREAM_UNSUPPORTED', /multifd flush/, 'multifd');
  refused(patched(at, [0x00, 0x88]), 'QEMU_STREAM_UNSUPPORTED', /RDMA/, 'rdma');
});

test('an unknown section type is refused', () => {
  const at = QemuStreamWriter.toBuffer(sampleRecords().slice(0, 8)).length; // the PART section's type byte
  refused(patched(at, [0x09]), 'QEMU_STREAM_UNSUPPORTED', /unknown section type 0x9/);
  refused(patched(at, [0x7e]), 'QEMU_STREAM_MALFORMED', /out of place/);
});

test('postcopy, COLO and return-path commands are refused, naming the capability', () => {
  const header = QemuStreamWriter.toBuffer(sampleRecords().slice(0, 2));
  const cmd = (n: number, data: Buffer) => Buffer.concat([Buffer.from([0x08, 0, n, 0, data.length]), data]);
  const openRp = cmd(1, Buffer.alloc(0));
  const ping = cmd(2, Buffer.from([0, 0, 0, 1]));
  refused(Buffer.concat([header, openRp, ping, cmd(3, Buffer.alloc(16))]), 'QEMU_STREAM_UNSUPPORTED', /POSTCOPY_ADVISE/, 'postcopy-ram');
  refused(Buffer.concat([header, openRp, ping, sample().subarray(header.length)]), 'QEMU_STREAM_UNSUPPORTED', /return path/, 'return-path');
  refused(Buffer.concat([header, cmd(8, Buffer.alloc(0))]), 'QEMU_STREAM_UNSUPPORTED', /COLO/, 'x-colo');
  refused(Buffer.concat([header, cmd(42, Buffer.alloc(0))]), 'QEMU_STREAM_UNSUPPORTED', /command 42/);
});

test('an iterable section other than ram is refused, naming block migration', () => {
  const records = sampleRecords();
  records[2] = { kind: 'section', type: 'start', sectionId: 3, idstr: 'block', instanceId: 0, versionId: 1 };
  refused(QemuStreamWriter.toBuffer(records.slice(0, 3)), 'QEMU_STREAM_UNSUPPORTED', /iterable section "block"/, 'block');
});

test('records that break the format are refused as malformed', () => {
  const records = sampleRecords();
  const bad = (i: number, r: QemuRecord) => QemuStreamWriter.toBuffer([...records.slice(0, i), r, ...records.slice(i + 1)]);
  refused(bad(9, { kind: 'ram-page', block: 'vga.vram', offset: 0, continued: false, data: page(1) }), 'QEMU_STREAM_MALFORMED', /unknown RAMBlock "vga.vram"/);
  refused(bad(9, { kind: 'ram-page', block: 'pc.ram', offset: 1 << 20, continued: false, data: page(1) }), 'QEMU_STREAM_MALFORMED', /beyond RAMBlock pc.ram/);
  refused(bad(9, { kind: 'ram-page', block: 'pc.ram', offset: 0, continued: true, data: page(1) }), 'QEMU_STREAM_MALFORMED', /CONTINUE with no previous block/);
  refused(bad(7, { kind: 'footer', sectionId: 5 }), 'QEMU_STREAM_MALFORMED', /expected the footer of section 2/);
  refused(bad(5, { kind: 'ram-block', block: 'pc.rom', usedLength: 1 << 30 }), 'QEMU_STREAM_MALFORMED', /does not fit MEM_SIZE/);
});

test('lengths from the stream never size an allocation: a 2 GiB machine name is refused', () => {
  const b = Buffer.concat([Buffer.from('5145564d0000000307', 'hex'), Buffer.from([0x7f, 0xff, 0xff, 0xff]), Buffer.alloc(64)]);
  refused(b, 'QEMU_STREAM_MALFORMED', /machine name of 2147483647 bytes/);
});

test('device state without EOF and VMDESCRIPTION at its end is truncated', () => {
  const bytes = sample();
  refused(bytes.subarray(0, bytes.length - 1), 'QEMU_STREAM_TRUNCATED', /without QEMU_VM_EOF/);
  refused(Buffer.concat([bytes, Buffer.from([0])]), 'QEMU_STREAM_TRUNCATED', /without QEMU_VM_EOF/);
});

test('after a refusal every call repeats it; the records before it were emitted', () => {
  const bytes = patched(firstPageOffset() + 6, [0x04, 0x08]);
  const p = new QemuStreamParser();
  const kinds: string[] = [];
  assert.throws(() => p.push(bytes, (r) => void kinds.push(r.kind)), { code: 'QEMU_STREAM_UNSUPPORTED' });
  assert.deepEqual(kinds.slice(0, 3), ['header', 'configuration', 'section']);
  assert.equal(kinds.at(-1), 'section');
  assert.throws(() => p.push(Buffer.alloc(1), () => {}), { code: 'QEMU_STREAM_UNSUPPORTED' });
  assert.throws(() => p.end(() => {}), { code: 'QEMU_STREAM_UNSUPPORTED' });
});

test('parseQemuStream pulls chunks from an async source and yields records, then the error', async () => {
  async function* chunks(b: Buffer) {
    for (let i = 0; i < b.length; i += 1000) yield b.subarray(i, i + 1000);
  }
  const kinds: string[] = [];
  for await (const r of parseQemuStream(chunks(sample()))) kinds.push(r.kind);
  assert.equal(kinds.filter((k) => k === 'ram-page').length, 3);
  assert.equal(kinds.at(-1), 'end');
  const seen: string[] = [];
  await assert.rejects(async () => {
    for await (const r of parseQemuStream(chunks(sample().subarray(0, 5000)))) seen.push(r.kind);
  }, { code: 'QEMU_STREAM_TRUNCATED' });
  assert.ok(seen.includes('ram-page'));
});

test('a record longer than MAX_RECORD is refused, not buffered', () => {
  const header = QemuStreamWriter.toBuffer(sampleRecords().slice(0, 1));
  const uuid = Buffer.concat([Buffer.from([0x05, 18]), Buffer.from('configuration/uuid'), Buffer.from([0, 0, 0, 1]), Buffer.alloc(16)]);
  const config = Buffer.concat([Buffer.from([0x07, 0, 0, 0, 1, 0x41]), ...Array.from({ length: 4000 }, () => uuid)]);
  assert.ok(config.length > MAX_RECORD);
  refused(Buffer.concat([header, config]), 'QEMU_STREAM_MALFORMED', /longer than 65536 bytes/);
});
