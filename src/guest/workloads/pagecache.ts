/**
 * `pagecache` — a file server: files read by Zipf popularity into a page cache
 * that fills most of memory. In steady state 4 files per 10 ms (mostly hits;
 * misses evict the least recently used files) and one heap page rewritten per step.
 */
import { fileReader } from './file-reader.ts';

export const pagecache = fileReader('pagecache', 4, 10);
