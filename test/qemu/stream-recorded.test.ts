/**
 * The stream parser on real QEMU 7.2 streams, recorded here from a real guest: one
 * live migration of the running guest and one of the same guest stopped (whose pages
 * can be checked against pmemsave). Parse plus write gives every byte back; the
 * records are what QEMU says it sent; every page is the guest's memory.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { QemuStreamParser, QemuStreamWriter, QemuStreamError, type QemuRecord } from '../../src/qemu/stream/index.ts';
import { pmemsave, type MigrationInfo } from '../../src/qemu/migration-control.ts';
import { tempDir } from '../helpers/processes.ts';
import { haveTool, requireTools } from '../helpers/tools.ts';
import { bootTestGuest, recordMigration, QEMU_TOOLS, TEST_MEMORY, type TestGuest } from '../helpers/qemu-guest.ts';

const dir = tempDir('livemig-qemu-');
const live = join(dir.path, 'live.mig');
const stopped = join(dir.path, 'stopped.mig');
const memory = join(dir.path, 'stopped.mem');
let guest: TestGuest | undefined;
let liveInfo: MigrationInfo;
let stoppedInfo: MigrationInfo;

async function recordTo(path: string): Promise<MigrationInfo> {
  let written: Promise<unknown> = Promise.resolve();
  const rec = await recordMigration(guest!.qemu, dir.path, {}, (socket) => {
    const file = createWriteStream(path);
    socket.pipe(file);
    written = once(file, 'finish');
  });
  await written;
  return rec.info;
}

before(async () => {
  if (!QEMU_TOOLS.every(haveTool)) return;
  guest = await bootTestGuest(dir.path);
  liveInfo = await recordTo(live); // the guest runs: several passes, CONTINUE across sections
  await guest.qemu.qmp.execute('cont'); // a completed migration leaves the source in postmigrate
  await guest.qemu.serial.askAlive(30_000);
  await guest.qemu.qmp.execute('stop');
  stoppedInfo = await recordTo(stopped);
  await pmemsave(guest.qemu.qmp, TEST_MEMORY, memory);
});
after(async () => {
  await guest?.stop();
  dir.cleanup();
});

/** Parses a file in chunks of `chunk` bytes; `onRecord` sees each record, the writer's output is hashed. */
async function parseFile(path: string, chunk: number, onRecord: (r: QemuRecord) => void = () => {}): Promise<{ input: string; output: string }> {
  const parser = new QemuStreamParser();
  const writer = new QemuStreamWriter();
  const hashIn = createHash('sha256');
  const hashOut = createHash('sha256');
  const out: Buffer[] = [];
  const emit = (r: QemuRecord) => (onRecord(r), writer.write(r, out));
  for await (const c of createReadStream(path, { highWaterMark: chunk })) {
    hashIn.update(c as Buffer);
    parser.push(c as Buffer, emit);
    for (const b of out.splice(0)) hashOut.update(b);
  }
  parser.end(emit);
  for (const b of out.splice(0)) hashOut.update(b);
  return { input: hashIn.digest('hex'), output: hashOut.digest('hex') };
}

test('both recordings completed on the source', (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  assert.equal(liveInfo.status, 'completed');
  assert.equal(stoppedInfo.status, 'completed');
});

test('parse then write reproduces a live migration stream byte for byte, whatever the chunking', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  for (const chunk of [64 << 10, 4097]) {
    const { input, output } = await parseFile(live, chunk);
    assert.equal(output, input, `chunks of ${chunk}`);
  }
});

test('the stream has the shape QEMU 7.2 writes: configuration, ram START with the RAMBlocks, PART/END, then device state and VMDESCRIPTION', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const kinds: string[] = [];
  const blocks = new Map<string, number>();
  const sections: string[] = [];
  let machine = '';
  let end: Extract<QemuRecord, { kind: 'end' }> | undefined;
  let firstAfterSection: boolean[] = [];
  let pendingSection = false;
  await parseFile(live, 64 << 10, (r) => {
    if (kinds.at(-1) !== r.kind) kinds.push(r.kind);
    if (r.kind === 'configuration') machine = r.machine;
    if (r.kind === 'ram-block') blocks.set(r.block, r.usedLength);
    if (r.kind === 'section') (sections.push(`${r.type} ${r.idstr}`), (pendingSection = r.type !== 'full'));
    if ((r.kind === 'ram-page' || r.kind === 'ram-zero') && pendingSection) (firstAfterSection.push(r.continued), (pendingSection = false));
    if (r.kind === 'end') end = r;
  });
  assert.deepEqual(kinds.slice(0, 6), ['header', 'configuration', 'section', 'ram-mem-size', 'ram-block', 'ram-eos']);
  assert.match(machine, /^pc-i440fx-/);
  assert.equal(blocks.get('pc.ram'), TEST_MEMORY);
  assert.equal(sections[0], 'start ram');
  assert.ok(sections.includes('part ram'));
  const full = sections.findIndex((s) => s.startsWith('full'));
  assert.equal(sections[full - 1], 'end ram', 'the ram END comes right before the first FULL section');
  assert.ok(firstAfterSection.slice(1).includes(true), 'a section starts with CONTINUE: the block carries across sections');
  assert.ok(end);
  const desc = JSON.parse(end.vmdescription) as { page_size: number; devices: { name: string }[] };
  assert.equal(desc.page_size, 4096);
  assert.ok(desc.devices.some((d) => d.name === 'cpu'));
});

test('a stopped guest\'s stream: every pc.ram page once, PAGE bytes equal pmemsave, ZERO pages zero, counts as QEMU reports', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const mem = readFileSync(memory);
  const seen = new Uint8Array(TEST_MEMORY / 4096);
  let pages = 0;
  let zeros = 0;
  let compared = 0;
  const legacyHole = (o: number) => o >= 0xa0000 && o < 0x100000; // pmemsave reads VGA and ROM windows there, not pc.ram
  const { input, output } = await parseFile(stopped, 64 << 10, (r) => {
    if (r.kind !== 'ram-page' && r.kind !== 'ram-zero') return;
    r.kind === 'ram-page' ? pages++ : zeros++;
    if (r.block !== 'pc.ram') return;
    seen[r.offset / 4096]++;
    if (legacyHole(r.offset)) return;
    const expected = mem.subarray(r.offset, r.offset + 4096);
    if (r.kind === 'ram-page') assert.ok(r.data.equals(expected), `page at 0x${r.offset.toString(16)} differs from pmemsave`);
    else assert.ok(expected.every((b) => b === r.fill), `zero page at 0x${r.offset.toString(16)} is not zero in pmemsave`);
    compared++;
  });
  assert.equal(output, input);
  assert.ok(seen.every((n) => n === 1), 'each pc.ram page exactly once');
  assert.equal(compared, seen.length - (0x100000 - 0xa0000) / 4096, 'every pc.ram page outside the legacy hole compared');
  assert.equal(pages, stoppedInfo.ram!.normal, 'PAGE records = query-migrate ram.normal');
  assert.equal(zeros, stoppedInfo.ram!.duplicate, 'ZERO records = query-migrate ram.duplicate');
});

test('a real stream cut short is refused as truncated, wherever the cut', async (t) => {
  if (!requireTools(t, ...QEMU_TOOLS)) return;
  const bytes = readFileSync(stopped);
  for (const n of [5, 40, 200, 10_000, bytes.length >> 1, bytes.length - 50_000, bytes.length - 1]) {
    const p = new QemuStreamParser();
    const err = (() => {
      try {
        p.push(bytes.subarray(0, n), () => {});
        p.end(() => {});
      } catch (e) {
        return e as QemuStreamError;
      }
    })();
    assert.equal(err?.code, 'QEMU_STREAM_TRUNCATED', `cut at ${n}: ${err?.message}`);
  }
});
