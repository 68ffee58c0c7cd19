/**
 * The emulated guest's device state as bytes (the DEVICE_STATE payload, opaque to
 * the protocol). The guest OS's per-page tables go as raw little-endian arrays,
 * the rest as a small JSON header: at 8 GiB the state was 17 MiB of JSON that
 * took hundreds of milliseconds of downtime to write and parse; this is ~10 MiB
 * copied, not parsed. Layout (all u32 little-endian):
 *
 *   "LMDS" | version = 2 | json bytes | json | owner bytes | owner (1 per page)
 *   | pad to 4 | free count | free[] | anon count | anon[] | cache words | cache[]
 *
 * cache[] is, per extent in LRU order, [id, first block, dirty 0|1, n, n pages].
 * Every count is checked against the bytes that remain and against the guest's
 * size before anything is allocated: the bytes come from another host.
 */
import { LivemigError } from '../errors.ts';
import type { DeviceState } from './messages.ts';

const MAGIC = 0x53444d4c; // "LMDS" read little-endian
export const DEVICE_STATE_VERSION = 2;

const bad = (why: string) => new LivemigError('GUEST_DEVICE_STATE', `the device state cannot be read: ${why}`);

export function encodeDeviceState(d: DeviceState): Buffer {
  const { owner, free, anon, cache } = d.os;
  const json = Buffer.from(JSON.stringify({ workload: d.workload, options: d.options, rng: d.rng, workloadState: d.workloadState }));
  const pad = (4 - ((12 + json.length + 4 + owner.length) % 4)) % 4;
  const size = 12 + json.length + 4 + owner.length + pad + 4 + free.length * 4 + 4 + anon.length * 4 + 4 + cache.length * 4;
  const out = Buffer.alloc(size);
  let at = 0;
  const u32 = (v: number) => (out.writeUInt32LE(v, at), (at += 4));
  const words = (a: Uint32Array) => {
    u32(a.length);
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
    at += a.byteLength;
  };
  u32(MAGIC);
  u32(DEVICE_STATE_VERSION);
  u32(json.length);
  at += json.copy(out, at);
  u32(owner.length);
  out.set(owner, at);
  at += owner.length + pad;
  words(free);
  words(anon);
  words(cache);
  return out;
}

/** Reads a state made by encodeDeviceState for a guest of `pages` pages; anything else is GUEST_DEVICE_STATE. */
export function decodeDeviceState(b: Uint8Array, pages: number): DeviceState {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  let at = 0;
  const u32 = () => {
    if (at + 4 > buf.length) throw bad('it ends early');
    const v = buf.readUInt32LE(at);
    at += 4;
    return v;
  };
  const bytes = (n: number, max: number) => {
    if (n > max || at + n > buf.length) throw bad(`a table of ${n} entries does not fit`);
    const v = buf.subarray(at, at + n);
    at += n;
    return v;
  };
  // Copied out: a Uint32Array needs 4-byte alignment and the payload's own offset has none.
  const words = (max: number) => {
    const n = u32();
    const v = bytes(n * 4, max * 4);
    const out = new Uint32Array(n);
    new Uint8Array(out.buffer).set(v);
    return out;
  };
  if (u32() !== MAGIC) throw bad('not a livemig device state');
  const version = u32();
  if (version !== DEVICE_STATE_VERSION) throw bad(`version ${version} is not ${DEVICE_STATE_VERSION}`);
  let head: Omit<DeviceState, 'version' | 'os'>;
  try {
    head = JSON.parse(bytes(u32(), 1 << 20).toString('utf8'));
  } catch (e) {
    throw e instanceof LivemigError ? e : bad('its header is not valid JSON');
  }
  const ownerLength = u32();
  if (ownerLength !== pages) throw bad(`it is for ${ownerLength} pages, this guest has ${pages}`);
  const owner = Uint8Array.from(bytes(ownerLength, pages));
  at += (4 - (at % 4)) % 4;
  const free = words(pages);
  const anon = words(pages);
  // Four words of header per extent at most once per page, plus the pages.
  const cache = words(5 * pages);
  if (at !== buf.length) throw bad(`${buf.length - at} bytes left over`);
  checkPages(free, anon, cache, pages);
  return { version: DEVICE_STATE_VERSION, ...head, os: { owner, free, anon, cache } };
}

/** Every page number inside the guest, every extent whole: restoring then cannot go wrong. */
function checkPages(free: Uint32Array, anon: Uint32Array, cache: Uint32Array, pages: number): void {
  for (const list of [free, anon]) for (let i = 0; i < list.length; i++) if (list[i] >= pages) throw bad(`page ${list[i]} is outside the guest`);
  for (let i = 0; i < cache.length; ) {
    if (i + 4 > cache.length || cache[i + 2] > 1) throw bad('a page cache extent is malformed');
    const n = cache[i + 3];
    if (i + 4 + n > cache.length) throw bad('a page cache extent overruns its table');
    for (let k = i + 4; k < i + 4 + n; k++) if (cache[k] >= pages) throw bad(`page ${cache[k]} is outside the guest`);
    i += 4 + n;
  }
}
