/**
 * One page compressed with LZ4 (block format, lz4-napi): the body is the page's
 * size as u32 little endian (always 4096), then the LZ4 block. The size is
 * checked before the decoder sees it, so a peer never decides an allocation.
 */
import { compressSync, uncompressSync } from 'lz4-napi';
import { LivemigError } from '../errors.ts';
import { PAGE_SIZE } from './protocol.ts';

const protocolError = (what: string) => new LivemigError('MIGRATE_PROTOCOL', `LZ4 page: ${what}`);

/** The page's LZ4 body, or null when it would not be smaller than `limit` bytes. */
export function lz4Compress(page: Uint8Array, limit = PAGE_SIZE): Buffer | null {
  const src = Buffer.isBuffer(page) ? page : Buffer.from(page.buffer, page.byteOffset, page.byteLength);
  const out = compressSync(src);
  return out.length < limit ? out : null;
}

/** The page an LZ4 body holds; MIGRATE_PROTOCOL unless it is exactly one page. */
export function lz4Decompress(body: Uint8Array): Buffer {
  if (body.length < 5) throw protocolError(`a ${body.length}-byte body`);
  const size = body[0] | (body[1] << 8) | (body[2] << 16) | (body[3] << 24);
  if (size !== PAGE_SIZE) throw protocolError(`states ${size >>> 0} bytes, not one page`);
  let page: Buffer;
  try {
    page = uncompressSync(body);
  } catch (err) {
    throw protocolError(`does not decode (${(err as Error).message})`);
  }
  if (page.length !== PAGE_SIZE) throw protocolError(`decodes to ${page.length} bytes, not one page`);
  return page;
}
