/**
 * `pagecache` — a file server: files read by Zipf popularity (exponent 1.1) into
 * a page cache that fills most of memory. In steady state one file per 5 ms
 * (about 65 MB/s of file reads, mostly cache hits; misses evict the least
 * recently used files) and one heap page rewritten per step.
 */
import { fileReader } from './file-reader.ts';

export const pagecache = fileReader('pagecache', 1, 5);
