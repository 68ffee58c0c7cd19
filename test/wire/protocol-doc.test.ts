/**
 * docs/protocol.md is the protocol's specification and src/wire/protocol.ts its
 * code: their tables must say the same thing, so a frame, encoding, capability,
 * timeout or error code added to one side only fails here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readDoc, table, tables } from '../helpers/markdown.ts';
import {
  FRAMES, ENCODING, ENCODING_BODY, ENCODING_BODY_RANGE, CAPABILITY, REQUIRED_CAPABILITIES, QEMU_PROXY_CAPABILITIES, TIMEOUT, PROTOCOL_VERSION, PROGRESS_INTERVAL_MS, SOURCE_KEEPALIVE_MS,
  PAGE_SIZE, DIGEST_CHUNK_PAGES, MAX_REF_RUN, PAGES_PER_FRAME, STORAGE_SAMPLES, HASH_BYTES, PAGE_ENTRY_HEADER, MAP_NO_BLOCK,
  QEMU_ENTRY, QEMU_ENTRY_BODY, QEMU_ENTRY_HEADER, QEMU_RUN_PAGE_FLAGS, QEMU_STREAM_FORMAT, MAX_QEMU_RAM_BLOCKS, MAX_QEMU_BLOCK_ID,
  QEMU_REF_RANGE, STREAM_KIND_QEMU, asHello, asQemuDone, asQemuEnd,
} from '../../src/wire/index.ts';
import { constants } from '../../src/qemu/stream/index.ts';
import { ERROR_CODES } from '../../src/errors.ts';

const doc = readDoc('docs/protocol.md');
const sorted = (rows: string[][]) => rows.map((r) => r.join(' | ')).sort();

test('the frame tables in the doc (the engine\'s and QEMU streams\') are the protocol module\'s frame table', () => {
  const inDoc = tables(doc, ['type', 'name', 'sender', 'payload', 'max bytes', 'per-page bytes']).flat();
  const inCode = Object.values(FRAMES).map((f) => [String(f.type), f.name, f.from, f.body, String(f.maxBytes), String(f.bytesPerPage)]);
  assert.deepEqual(sorted(inDoc), sorted(inCode));
});

test('the page encodings in the doc are the protocol module\'s, with their body lengths', () => {
  const inDoc = table(doc, ['encoding', 'name', 'body', 'length']).map(([n, name, , length]) => [n, name, length]);
  const length = (n: number) => (n in ENCODING_BODY ? String(ENCODING_BODY[n as keyof typeof ENCODING_BODY]) : ENCODING_BODY_RANGE[n as keyof typeof ENCODING_BODY_RANGE].join('..'));
  const inCode = Object.entries(ENCODING).map(([name, n]) => [String(n), name, length(n)]);
  assert.deepEqual(sorted(inDoc), sorted(inCode));
});

test('the capabilities in the doc are the protocol module\'s, and the same ones are required', () => {
  const rows = table(doc, ['capability', 'meaning']);
  assert.deepEqual(rows.map((r) => r[0]).sort(), Object.values(CAPABILITY).sort());
  assert.deepEqual(rows.filter((r) => /\(required\)/.test(r[1])).map((r) => r[0]).sort(), [...REQUIRED_CAPABILITIES].sort());
});

test('the timeouts in the doc are the protocol module\'s', () => {
  const inDoc = table(doc, ['what', 'ms', 'who']).map(([what, ms]) => [what, ms]);
  assert.deepEqual(sorted(inDoc), sorted(Object.entries(TIMEOUT).map(([k, v]) => [k, String(v)])));
});

test('every error code the doc says a peer may send is one of ours', () => {
  for (const [code] of table(doc, ['code', 'meaning'])) assert.ok(code in ERROR_CODES, `${code} is not in src/errors.ts`);
});

test('the numbers the doc states in prose are the protocol module\'s', () => {
  const says = (re: RegExp, what: string) => assert.match(doc, re, what);
  says(new RegExp(`^# The livemig migration protocol, version ${PROTOCOL_VERSION}$`, 'm'), 'the version in the title');
  says(new RegExp(`PROGRESS\` every ${PROGRESS_INTERVAL_MS} ms`), 'the progress interval');
  says(new RegExp(`whenever it has sent nothing for ${SOURCE_KEEPALIVE_MS} ms`), 'the source\'s keepalive interval');
  says(new RegExp(`chunks of ${DIGEST_CHUNK_PAGES} pages \\(${(DIGEST_CHUNK_PAGES * PAGE_SIZE) / 1024} KiB\\)`), 'the digest chunk');
  says(new RegExp(`1 ≤ count ≤ ${MAX_REF_RUN}`), 'the longest run');
  says(new RegExp(`at most ${PAGES_PER_FRAME} entries per frame`), 'entries per frame');
  says(new RegExp(`≤ ${STORAGE_SAMPLES} sampled blocks`), 'the storage sample');
  says(new RegExp(`first ${HASH_BYTES} bytes of \`HMAC-SHA-256`), 'the reference hash');
  says(new RegExp(`a ${PAGE_ENTRY_HEADER}-byte header and a body`), 'the entry header');
  says(new RegExp(`block \`0x${MAP_NO_BLOCK.toString(16)}\` means no mapping`), 'the MAP sentinel');
  says(new RegExp(`must be ${PAGE_SIZE}`), 'the page size');
});

test('the QEMU_STREAM entry kinds in the doc are the protocol module\'s, with their body lengths', () => {
  const inDoc = table(doc, ['kind', 'name', 'body', 'length']).map(([n, name, , length]) => [n, name, length]);
  const inCode = Object.entries(QEMU_ENTRY).map(([name, n]) => [String(n), name, QEMU_ENTRY_BODY[n] === 0 ? 'any ≥ 1' : String(QEMU_ENTRY_BODY[n])]);
  assert.deepEqual(sorted(inDoc), sorted(inCode));
});

test('the QEMU stream numbers the doc states in prose are the protocol module\'s, and QEMU\'s', () => {
  const says = (re: RegExp, what: string) => assert.match(doc, re, what);
  assert.equal(QEMU_RUN_PAGE_FLAGS, constants.RAM_FLAG.PAGE | constants.RAM_FLAG.CONTINUE, 'the rebuilt header is a CONTINUE page header');
  says(new RegExp(`offset \\+ i × ${PAGE_SIZE} \\| 0x${QEMU_RUN_PAGE_FLAGS.toString(16)}\``), 'the rebuilt page header');
  says(new RegExp(`count × ${PAGE_SIZE + 8} − 8\``), 'the bytes a run stands for');
  says(new RegExp(`QEMU's stream format version: ${QEMU_STREAM_FORMAT}`), 'the stream format');
  assert.equal(QEMU_STREAM_FORMAT, constants.QEMU_VM_FILE_VERSION);
  says(new RegExp(`at most ${MAX_QEMU_RAM_BLOCKS}; \`id\` 1 to ${MAX_QEMU_BLOCK_ID} characters`), 'the RAM block list');
  says(new RegExp(`\`kind u8 \\| length u32\``), 'the entry header');
  assert.equal(QEMU_ENTRY_HEADER, 5);
  says(new RegExp(`ranges of ${QEMU_REF_RANGE} bytes`), 'a request range');
  says(new RegExp(`\`${STREAM_KIND_QEMU}\``), 'the stream kind');
  says(/listed `qemu-stream`/, 'the capability gate');
  assert.deepEqual([...QEMU_PROXY_CAPABILITIES].sort(), [CAPABILITY.QEMU_STREAM, CAPABILITY.RETURN_PATH].sort());
});

/** The field names of the field table whose first field is `first`. */
function fieldTable(first: string): string[] {
  const found = tables(doc, ['field', 'type', 'meaning']).find((rows) => rows[0]?.[0] === first);
  assert.ok(found, `a field table starting with ${first}`);
  return found.map((r) => r[0]);
}

test('the fields the doc gives HELLO.stream, QEMU_END and QEMU_DONE are the ones the validators return', () => {
  const hello = asHello({
    protocol: 'livemig', versionMin: 3, versionMax: 3, capabilities: [], key: '00'.repeat(32), strategy: 'p2b',
    guest: { name: 'g', workload: 'qemu', options: {}, memoryBytes: 8192, pageSize: PAGE_SIZE, regions: [{ firstPage: 0, pages: 2 }] },
    storage: { spec: 's', description: 'd', size: 4096, sample: [] },
    stream: { kind: 'qemu', format: 3, ramBlocks: [{ id: 'pc.ram', bytes: 4096 }, { id: 'pc.rom', bytes: 100 }] },
  });
  assert.deepEqual(fieldTable('stream.kind'), Object.keys(hello.stream!).map((k) => `stream.${k}`));
  assert.deepEqual(fieldTable('streamBytes').sort(), Object.keys(asQemuEnd({ streamBytes: 1, refPages: 0 })).sort());
  const fetch = { reads: 0, maxInFlight: 0, meanLatencyMs: 0, stale: 0, busyMs: 0, readRate: 0, maxBacklog: 0, meanBacklog: 0 };
  const done = asQemuDone({ streamBytes: 1, refPages: 0, refRetried: 0, fetchedBytes: 0, qemuClosed: true, fetch });
  const doneTable = tables(doc, ['field', 'type', 'meaning']).find((rows) => rows.some((r) => r[0] === 'qemuClosed'))!;
  assert.deepEqual(doneTable.map((r) => r[0]).sort(), Object.keys(done).sort());
});

test('docs/errors.md lists every error code livemig raises, and only those', () => {
  const errors = readDoc('docs/errors.md');
  const rows = table(errors, ['code', 'meaning']);
  const nbdCodes = [...readDoc('nbd/errors.ts').matchAll(/\| '(NBD_[A-Z_]+)'/g)].map((m) => m[1]);
  assert.ok(nbdCodes.length > 5, 'the NBD library\'s codes are read from nbd/errors.ts');
  assert.deepEqual(rows.map((r) => r[0]).sort(), [...Object.keys(ERROR_CODES), ...nbdCodes].sort());
  for (const [code, meaning] of rows) if (code in ERROR_CODES) assert.equal(meaning, ERROR_CODES[code as keyof typeof ERROR_CODES], code);
});
