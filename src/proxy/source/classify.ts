/**
 * Which pages of a batch travel as references: each page's content hash is looked up
 * in the storage's content index (one request per batch; requests of many batches in
 * flight), and a page found on a block within the disk becomes a reference. Pages that
 * follow each other in the stream (nothing between them: no EOS, footer or section
 * header, the next page in the same RAM block) at consecutive RAM offsets on
 * consecutive blocks join one run, up to MAX_REF_RUN. One keyed hash per run,
 * computed on the hashing threads.
 */
import { PAGE_SIZE } from '../../wire/index.ts';
import { Batch, PAGE_FULL, PAGE_REF_NEXT, PAGE_REF_START } from './batch.ts';
import type { SourceProxySession } from './session.ts';

/** Continues the current run with page p? */
function continues(b: Batch, p: number, blocks: Float64Array, runLength: number, maxRun: number): boolean {
  return runLength > 0 && runLength < maxRun && b.piece[p] === b.piece[p - 1] + 1 && b.blockName[p] === undefined
    && b.offset[p] === b.offset[p - 1] + PAGE_SIZE && blocks[p] === blocks[p - 1] + 1;
}

/** Marks references and runs; returns the runs as [firstPage, count] pairs for the hashing threads. */
export function findRuns(b: Batch, blocks: Float64Array, diskBlocks: number, maxRun: number): Uint32Array {
  let runLength = 0;
  const refs: number[] = [];
  for (let p = 0; p < b.pages; p++) {
    const block = blocks[p];
    if (block < 0 || block >= diskBlocks) {
      b.kind[p] = PAGE_FULL;
      runLength = 0;
      continue;
    }
    refs.push(p);
    if (continues(b, p, blocks, runLength, maxRun)) {
      b.kind[p] = PAGE_REF_NEXT;
      b.runCount[b.runCount.length - 1]++;
      runLength++;
    } else {
      b.kind[p] = PAGE_REF_START;
      b.runPage.push(p);
      b.runCount.push(1);
      b.runBlock.push(block);
      runLength = 1;
    }
  }
  b.refIndex = Uint16Array.from(refs);
  const ranges = new Uint32Array(b.runPage.length * 2);
  b.runPage.forEach((p, i) => ((ranges[2 * i] = p), (ranges[2 * i + 1] = b.runCount[i])));
  return ranges;
}

/** Content hashes of the batch's pages as [hi, lo] pairs, as the content index keys blocks. */
function contentHashes(s: SourceProxySession, b: Batch): Uint32Array {
  const hasher = s.index!.hasher;
  const out = new Uint32Array(2 * b.pages);
  for (let p = 0; p < b.pages; p++) {
    hasher.hash(b.page(p));
    out[2 * p] = hasher.hi;
    out[2 * p + 1] = hasher.lo;
  }
  return out;
}

export async function classify(s: SourceProxySession, b: Batch): Promise<void> {
  await s.handshaken.promise;
  if (!s.useRefs || b.pages === 0) return;
  const blocks = await s.index!.lookup(contentHashes(s, b));
  s.stall.touch();
  const ranges = findRuns(b, blocks, s.diskBlocks, s.maxRun);
  if (ranges.length === 0) return;
  const { buffer, hashes } = await s.hasher.hashBuffer(b.used, ranges, true); // the pool's buffer moves whole
  b.data = buffer;
  b.hashes = hashes;
}
