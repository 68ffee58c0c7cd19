/**
 * docs/protocol.md is the protocol's specification and src/wire/protocol.ts its
 * code: their tables must say the same thing, so a frame, encoding, capability,
 * timeout or error code added to one side only fails here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readDoc, table } from '../helpers/markdown.ts';
import {
  FRAMES, ENCODING, ENCODING_BODY, ENCODING_BODY_RANGE, CAPABILITIES, REQUIRED_CAPABILITIES, TIMEOUT, PROTOCOL_VERSION, PROGRESS_INTERVAL_MS,
  PAGE_SIZE, DIGEST_CHUNK_PAGES, MAX_REF_RUN, PAGES_PER_FRAME, STORAGE_SAMPLES, HASH_BYTES, PAGE_ENTRY_HEADER, MAP_NO_BLOCK,
} from '../../src/wire/index.ts';
import { ERROR_CODES } from '../../src/errors.ts';

const doc = readDoc('docs/protocol.md');
const sorted = (rows: string[][]) => rows.map((r) => r.join(' | ')).sort();

test('the frame table in the doc is the protocol module\'s frame table', () => {
  const inDoc = table(doc, ['type', 'name', 'sender', 'payload', 'max bytes', 'per-page bytes']);
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
  assert.deepEqual(rows.map((r) => r[0]).sort(), [...CAPABILITIES].sort());
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
  says(new RegExp(`chunks of ${DIGEST_CHUNK_PAGES} pages \\(${(DIGEST_CHUNK_PAGES * PAGE_SIZE) / 1024} KiB\\)`), 'the digest chunk');
  says(new RegExp(`1 ≤ count ≤ ${MAX_REF_RUN}`), 'the longest run');
  says(new RegExp(`at most ${PAGES_PER_FRAME} entries per frame`), 'entries per frame');
  says(new RegExp(`≤ ${STORAGE_SAMPLES} sampled blocks`), 'the storage sample');
  says(new RegExp(`first ${HASH_BYTES} bytes of \`HMAC-SHA-256`), 'the reference hash');
  says(new RegExp(`a ${PAGE_ENTRY_HEADER}-byte header and a body`), 'the entry header');
  says(new RegExp(`block \`0x${MAP_NO_BLOCK.toString(16)}\` means no mapping`), 'the MAP sentinel');
  says(new RegExp(`must be ${PAGE_SIZE}`), 'the page size');
});

test('docs/errors.md lists every error code livemig raises, and only those', () => {
  const errors = readDoc('docs/errors.md');
  const rows = table(errors, ['code', 'meaning']);
  const nbdCodes = [...readDoc('nbd/errors.ts').matchAll(/\| '(NBD_[A-Z_]+)'/g)].map((m) => m[1]);
  assert.ok(nbdCodes.length > 5, 'the NBD library\'s codes are read from nbd/errors.ts');
  assert.deepEqual(rows.map((r) => r[0]).sort(), [...Object.keys(ERROR_CODES), ...nbdCodes].sort());
  for (const [code, meaning] of rows) if (code in ERROR_CODES) assert.equal(meaning, ERROR_CODES[code as keyof typeof ERROR_CODES], code);
});
