/**
 * Batches onto the link, strictly in stream order: stream bytes and pages sent in full
 * (their headers rebuilt) gather into BYTES entries; a run of referenced pages becomes
 * one REF_RUN entry after its first page's header (the other pages' headers the
 * destination rebuilds). Frames are flushed at their target size and at the end of
 * each batch (a pause in QEMU's stream must not hold bytes back), each under the
 * link's rate limit.
 */
import { constants } from '../../qemu/stream/index.ts';
import { FRAME_HEADER_BYTES, HASH_BYTES, encodeRefData } from '../../wire/index.ts';
import { PAGE_FULL, PAGE_REF_START, type Batch } from './batch.ts';
import type { SourceProxySession } from './session.ts';

const { RAM_FLAG } = constants;
/** A page header's u64, written here and copied into the frame at once. */
const header = Buffer.allocUnsafe(8);
/** A RAM block's name as QEMU writes it: length byte, then the name. */
const names = new Map<string, Buffer>();

function nameBytes(name: string): Buffer {
  let b = names.get(name);
  if (!b) names.set(name, (b = Buffer.concat([Buffer.from([Buffer.byteLength(name, 'latin1')]), Buffer.from(name, 'latin1')])));
  return b;
}

async function flush(s: SourceProxySession): Promise<void> {
  const body = s.frame.take();
  await s.limit.take(FRAME_HEADER_BYTES + body.length);
  await s.channel!.send({ name: 'QEMU_STREAM', body });
  if (s.channel!.socket.writableLength === 0) s.frame.recycle(); // every frame so far reached the kernel
  s.stall.touch();
}

/** Appends bytes to the frame, flushing whenever it fills. */
async function put(s: SourceProxySession, data: Buffer): Promise<void> {
  let at = s.frame.bytes(data);
  while (at < data.length) {
    await flush(s);
    at += s.frame.bytes(data.subarray(at));
  }
  if (s.frame.full) await flush(s);
}

/** A page's header as QEMU wrote it: offset | PAGE, with CONTINUE or followed by the block's name. */
async function putHeader(s: SourceProxySession, b: Batch, p: number): Promise<void> {
  const name = b.blockName[p];
  const v = b.offset[p] + RAM_FLAG.PAGE + (name === undefined ? RAM_FLAG.CONTINUE : 0);
  header.writeUInt32BE(Math.floor(v / 2 ** 32), 0);
  header.writeUInt32BE(v >>> 0, 4);
  await put(s, header);
  if (name !== undefined) await put(s, nameBytes(name));
}

export async function sendBatch(s: SourceProxySession, b: Batch): Promise<void> {
  let run = 0;
  for (const x of b.pieces) {
    if (typeof x !== 'number') {
      await put(s, x);
      continue;
    }
    const kind = b.kind[x];
    if (kind === PAGE_FULL) {
      await putHeader(s, b, x);
      await put(s, b.page(x));
      s.counts.full++;
    } else if (kind === PAGE_REF_START) {
      await putHeader(s, b, x);
      s.frame.ref(b.offset[x], b.runBlock[run], b.runCount[run], b.hashes!.subarray(run * HASH_BYTES, (run + 1) * HASH_BYTES));
      s.counts.ref += b.runCount[run];
      s.counts.refRuns++;
      run++;
      if (s.frame.full) await flush(s);
    }
  }
  s.kept.add(b);
  if (s.frame.length) await flush(s);
}

/** Answers a re-request: the referenced pages in full, at most one run per frame. */
export async function sendRefData(s: SourceProxySession, first: number, pages: number): Promise<void> {
  const body = encodeRefData(first, s.kept.pages(first, pages));
  await s.limit.take(FRAME_HEADER_BYTES + body.length);
  await s.channel!.send({ name: 'QEMU_REF_DATA', body });
  s.counts.refRetried += pages;
  s.log.warn({ first, pages }, 'references re-sent in full after a failed check');
}
