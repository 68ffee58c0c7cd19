/**
 * `idle` — a guest that has warmed its page cache and now mostly waits: the
 * memory mix of `pagecache`, then one file read and one heap page written per
 * 100 ms (about 40 KB/s of memory writes). The easy case for pre-copy.
 */
import { fileReader } from './file-reader.ts';

export const idle = fileReader('idle', 1, 100);
