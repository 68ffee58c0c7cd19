/** The options about pages: what the guest's heap holds (--heap, --write-size) and how pages travel (--compress, --xbzrle-cache). */
import { heapOptionsProblem, type HeapKind } from '../guest/workloads/heap.ts';
import type { CodecOptions } from '../migrate/source/page-codecs.ts';
import { sizeOption } from './parse.ts';
import { UsageError } from './usage-error.ts';

/** --heap and --write-size as workload options (absent ones stay absent). */
export function heapOptions(heap: string | undefined, writeSize: string | undefined): { heap?: HeapKind; writeSize?: number } {
  const size = writeSize === undefined ? undefined : sizeOption('--write-size', writeSize);
  const problem = heapOptionsProblem(heap, size);
  if (problem) throw new UsageError(problem);
  return { ...(heap ? { heap: heap as HeapKind } : {}), ...(size !== undefined ? { writeSize: size } : {}) };
}

const COMPRESS = ['auto', 'always', 'off'] as const;

/** --compress and --xbzrle-cache (0 turns XBZRLE off) as migration options (absent ones stay absent). */
export function codecOptions(compress: string | undefined, xbzrleCache: string | undefined): Partial<CodecOptions> {
  if (compress !== undefined && !COMPRESS.includes(compress as CodecOptions['compress'])) throw new UsageError(`--compress must be ${COMPRESS.join(', ')}`);
  const cache = xbzrleCache === undefined ? undefined : xbzrleCache === '0' ? 0 : sizeOption('--xbzrle-cache', xbzrleCache);
  return { ...(compress ? { compress: compress as CodecOptions['compress'] } : {}), ...(cache !== undefined ? { xbzrleCacheBytes: cache } : {}) };
}

export const CODEC_HELP = `  --compress MODE   LZ4 for full pages: auto (default: while the link, not the
                    CPU, limits the sending and compressing saves time), always, off
  --xbzrle-cache SIZE  sent pages kept for XBZRLE deltas of pages sent again
                    (default 64MiB, LRU; 0: no XBZRLE); it stops itself after a
                    round whose deltas saved under a tenth`;
