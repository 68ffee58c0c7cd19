/**
 * The JSON payloads of the protocol, typed, and their validation on receipt: a
 * payload that lacks a field, has one of the wrong type or out of range is a
 * protocol error before anything acts on it (units in docs/protocol.md).
 */
import { LivemigError } from '../errors.ts';
import { HASH_BYTES, PAGE_SIZE, REGION_PAGES, STORAGE_SAMPLES, PROTOCOL_NAME, MAX_QEMU_BLOCK_ID, MAX_QEMU_RAM_BLOCKS, STREAM_KIND_QEMU } from './protocol.ts';

export interface RegionInfo {
  firstPage: number;
  pages: number;
}

export interface GuestInfo {
  name: string;
  workload: string;
  /** The workload's options (seed, rates): opaque to the protocol. */
  options: Record<string, unknown>;
  memoryBytes: number;
  pageSize: number;
  regions: RegionInfo[];
}

export interface StorageIdentity {
  /** How the source reaches the disk (a URI or path); the destination never opens it unless it is its own --disk. */
  spec: string;
  description: string;
  size: number;
  /** Keyed hashes (hex) of sampled blocks, chosen by the key. */
  sample: { block: number; hash: string }[];
}

export interface Hello {
  protocol: typeof PROTOCOL_NAME;
  versionMin: number;
  versionMax: number;
  capabilities: string[];
  guest: GuestInfo;
  storage: StorageIdentity;
  /** The migration key (hex, at least 16 bytes) on a plain link; absent under TLS, where the key is the session's. */
  key?: string;
  strategy: string;
  /** Present when the migration carries a QEMU migration stream (capability qemu-stream). */
  stream?: StreamInfo;
  /** The source guest's lease on the disk, where the storage grants leases: the destination takes it over before it resumes. */
  lease?: { token: string; epoch: number };
}

/** One of QEMU's RAMBlocks, as its stream declares it at setup (MEM_SIZE). */
export interface QemuRamBlock {
  id: string;
  bytes: number;
}

/** What the stream is: QEMU's, in its format version, over these RAM blocks (guest.memoryBytes is their sum in whole pages). */
export interface StreamInfo {
  kind: typeof STREAM_KIND_QEMU;
  format: number;
  ramBlocks: QemuRamBlock[];
}

export interface Welcome {
  version: number;
  capabilities: string[];
  storageMatch: boolean;
  storageReason?: string;
  /** The sampled blocks that read differently here, with this host's keyed hash of each. */
  storageDiffers?: { block: number; hash: string }[];
}

/** The destination's fetch queue and verification, as it reports them every PROGRESS_INTERVAL_MS. */
export interface Progress {
  /** Pages that arrived as references so far. */
  refsReceived: number;
  /** Referenced pages not yet resolved (waiting or being read). */
  pending: number;
  applied: number;
  bytesRead: number;
  /** Storage read rate in bytes/s (0 until measured). */
  readRate: number;
  /** Milliseconds of memory-digest hashing the destination still owes. */
  verifyMs: number;
}

export interface Complete {
  /** The highest sequence number the source used. */
  lastSeq: number;
}

export interface Digests {
  /** Per memory region, the hex HMAC-SHA-256 over its chunk digests. */
  digests: string[];
}

/** The destination's fetch queue over the migration. */
export interface FetchReport {
  reads: number;
  maxInFlight: number;
  meanLatencyMs: number;
  stale: number;
  /** Time with a read outstanding, and the storage read rate within it (bytes/s). */
  busyMs: number;
  readRate: number;
  /** References waiting to be read, sampled every PROGRESS_INTERVAL_MS. */
  maxBacklog: number;
  meanBacklog: number;
}

export interface Resumed {
  verified: true;
  /** False when the destination holds the guest paused (its operator resumes it). */
  running: boolean;
  fetchedBytes: number;
  sampleBytes: number;
  refsApplied: number;
  mapEntries: number;
  refRetried: number;
  fetch: FetchReport;
  digestChunks: number;
}

/** QEMU_END: QEMU's stream ended whole (its trailer found) after this many bytes. */
export interface QemuEnd {
  streamBytes: number;
  /** Pages the source sent as references in all. */
  refPages: number;
}

/** QEMU_DONE: the destination proxy has written the whole stream to its QEMU. */
export interface QemuDone {
  streamBytes: number;
  refPages: number;
  /** Referenced pages whose keyed hash did not match, asked for in full. */
  refRetried: number;
  fetchedBytes: number;
  /** QEMU closed its end after reading the stream (it read up to the end and finished loading, or failed). */
  qemuClosed: boolean;
  fetch: FetchReport;
}

export interface ErrorBody {
  code: string;
  message: string;
}

// --- validation -------------------------------------------------------------

type Json = Record<string, unknown>;

function bad(where: string, what: string): never {
  throw new LivemigError('MIGRATE_PROTOCOL', `${where}: ${what}`);
}
function object(v: unknown, where: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(where, 'not an object');
  return v as Json;
}
function int(o: Json, key: string, where: string, max = Number.MAX_SAFE_INTEGER, min = 0): number {
  const v = o[key];
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) bad(where, `${key} must be an integer in ${min}..${max}`);
  return v as number;
}
function num(o: Json, key: string, where: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) bad(where, `${key} must be a number >= 0`);
  return v;
}
function str(o: Json, key: string, where: string, maxLength = 4096): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length > maxLength) bad(where, `${key} must be a string of at most ${maxLength} characters`);
  return v;
}
function bool(o: Json, key: string, where: string): boolean {
  if (typeof o[key] !== 'boolean') bad(where, `${key} must be true or false`);
  return o[key] as boolean;
}
function list(o: Json, key: string, where: string, max: number): unknown[] {
  const v = o[key];
  if (!Array.isArray(v) || v.length > max) bad(where, `${key} must be a list of at most ${max} items`);
  return v;
}
const strings = (o: Json, key: string, where: string) => list(o, key, where, 64).map((c, i) => str({ c }, 'c', `${where}.${key}[${i}]`, 64));
const hex = (s: string, bytes: number) => s.length === bytes * 2 && /^[0-9a-f]*$/.test(s);

/**
 * A guest's name: it becomes a directory name on the destination (its state dir), so
 * nothing that could name another path: no separators, no leading dot.
 */
export const GUEST_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,255}$/;

/** The largest guest a HELLO may declare (checked again against this host's memory). */
export const MAX_GUEST_BYTES = 2 ** 40;

function guestInfo(v: unknown): GuestInfo {
  const g = object(v, 'HELLO.guest');
  const memoryBytes = int(g, 'memoryBytes', 'HELLO.guest', MAX_GUEST_BYTES, PAGE_SIZE);
  const pageSize = int(g, 'pageSize', 'HELLO.guest');
  if (memoryBytes % PAGE_SIZE) bad('HELLO.guest', `memoryBytes must be a multiple of ${PAGE_SIZE}`);
  const pages = memoryBytes / PAGE_SIZE;
  const regions = list(g, 'regions', 'HELLO.guest', Math.ceil(pages / REGION_PAGES)).map((r, i) => {
    const o = object(r, `HELLO.guest.regions[${i}]`);
    return { firstPage: int(o, 'firstPage', 'HELLO.guest.regions', pages), pages: int(o, 'pages', 'HELLO.guest.regions', REGION_PAGES, 1) };
  });
  // Regions tile memory in order: each starts on a region boundary where the last one ended.
  let next = 0;
  for (const r of regions) {
    if (r.firstPage !== next || r.firstPage % REGION_PAGES) bad('HELLO.guest', 'regions must tile memory in order, each at most 2^18 pages');
    next += r.pages;
  }
  if (next !== pages) bad('HELLO.guest', 'regions do not cover memoryBytes');
  const options = object(g.options ?? {}, 'HELLO.guest.options');
  const name = str(g, 'name', 'HELLO.guest', 256);
  if (!GUEST_NAME.test(name)) bad('HELLO.guest', 'name must be 1 to 256 letters, digits, ".", "_" or "-", not starting with "."');
  return { name, workload: str(g, 'workload', 'HELLO.guest', 64), options, memoryBytes, pageSize, regions };
}

function blockHashes(s: Record<string, unknown>, field: string, where: string): { block: number; hash: string }[] {
  return list(s, field, where, STORAGE_SAMPLES).map((x, i) => {
    const o = object(x, `${where}.${field}[${i}]`);
    const hash = str(o, 'hash', `${where}.${field}`, 64);
    if (!hex(hash, HASH_BYTES)) bad(`${where}.${field}`, `hash must be ${HASH_BYTES} bytes of hex`);
    return { block: int(o, 'block', `${where}.${field}`), hash };
  });
}

function storageIdentity(v: unknown): StorageIdentity {
  const s = object(v, 'HELLO.storage');
  const sample = blockHashes(s, 'sample', 'HELLO.storage');
  return { spec: str(s, 'spec', 'HELLO.storage'), description: str(s, 'description', 'HELLO.storage'), size: int(s, 'size', 'HELLO.storage'), sample };
}

/** HELLO.stream: QEMU's RAM blocks, which must add up (in whole pages) to guest.memoryBytes. */
function streamInfo(v: unknown, memoryBytes: number): StreamInfo {
  const s = object(v, 'HELLO.stream');
  if (s.kind !== STREAM_KIND_QEMU) bad('HELLO.stream', `kind must be ${JSON.stringify(STREAM_KIND_QEMU)}`);
  const format = int(s, 'format', 'HELLO.stream', 0xffff);
  let pages = 0;
  const ramBlocks = list(s, 'ramBlocks', 'HELLO.stream', MAX_QEMU_RAM_BLOCKS).map((b, i) => {
    const o = object(b, `HELLO.stream.ramBlocks[${i}]`);
    const id = str(o, 'id', 'HELLO.stream.ramBlocks', MAX_QEMU_BLOCK_ID);
    if (!id) bad('HELLO.stream.ramBlocks', 'id must not be empty');
    const bytes = int(o, 'bytes', 'HELLO.stream.ramBlocks', MAX_GUEST_BYTES, 1);
    pages += Math.ceil(bytes / PAGE_SIZE);
    return { id, bytes };
  });
  if (pages * PAGE_SIZE !== memoryBytes) bad('HELLO.stream', 'ramBlocks do not add up to guest.memoryBytes');
  return { kind: STREAM_KIND_QEMU, format, ramBlocks };
}

function leaseOf(v: unknown): { token: string; epoch: number } {
  const l = object(v, 'HELLO.lease');
  return { token: str(l, 'token', 'HELLO.lease', 128), epoch: int(l, 'epoch', 'HELLO.lease') };
}

export function asHello(v: unknown): Hello {
  const o = object(v, 'HELLO');
  if (o.protocol !== PROTOCOL_NAME) bad('HELLO', `not a ${PROTOCOL_NAME} migration`);
  const key = o.key === undefined ? undefined : str(o, 'key', 'HELLO', 128);
  if (key !== undefined && (!/^[0-9a-f]*$/.test(key) || key.length % 2 || key.length < 32)) bad('HELLO', 'the migration key must be at least 128 bits of hex');
  const guest = guestInfo(o.guest);
  return {
    protocol: PROTOCOL_NAME,
    versionMin: int(o, 'versionMin', 'HELLO', 0xffff),
    versionMax: int(o, 'versionMax', 'HELLO', 0xffff),
    capabilities: strings(o, 'capabilities', 'HELLO'),
    guest,
    storage: storageIdentity(o.storage),
    ...(key === undefined ? {} : { key }),
    strategy: str(o, 'strategy', 'HELLO', 64),
    ...(o.stream === undefined ? {} : { stream: streamInfo(o.stream, guest.memoryBytes) }),
    ...(o.lease === undefined ? {} : { lease: leaseOf(o.lease) }),
  };
}

export function asWelcome(v: unknown): Welcome {
  const o = object(v, 'WELCOME');
  const reason = o.storageReason === undefined ? {} : { storageReason: str(o, 'storageReason', 'WELCOME') };
  const differs = o.storageDiffers === undefined ? {} : { storageDiffers: blockHashes(o, 'storageDiffers', 'WELCOME') };
  return { version: int(o, 'version', 'WELCOME', 0xffff), capabilities: strings(o, 'capabilities', 'WELCOME'), storageMatch: bool(o, 'storageMatch', 'WELCOME'), ...reason, ...differs };
}

export function asProgress(v: unknown): Progress {
  const o = object(v, 'PROGRESS');
  const n = (k: string) => num(o, k, 'PROGRESS');
  return { refsReceived: n('refsReceived'), pending: n('pending'), applied: n('applied'), bytesRead: n('bytesRead'), readRate: n('readRate'), verifyMs: n('verifyMs') };
}

export function asComplete(v: unknown): Complete {
  return { lastSeq: int(object(v, 'COMPLETE'), 'lastSeq', 'COMPLETE', 0xffffffff) };
}

export function asDigests(v: unknown): Digests {
  const o = object(v, 'DIGESTS');
  const digests = list(o, 'digests', 'DIGESTS', 1 << 20).map((d, i) => str({ d }, 'd', `DIGESTS[${i}]`, 64));
  return { digests };
}

function fetchReport(v: unknown, where: string): FetchReport {
  const f = object(v, `${where}.fetch`);
  const n = (k: string) => num(f, k, `${where}.fetch`);
  return {
    reads: n('reads'), maxInFlight: n('maxInFlight'), meanLatencyMs: n('meanLatencyMs'), stale: n('stale'),
    busyMs: n('busyMs'), readRate: n('readRate'), maxBacklog: n('maxBacklog'), meanBacklog: n('meanBacklog'),
  };
}

export function asResumed(v: unknown): Resumed {
  const o = object(v, 'RESUMED');
  if (o.verified !== true) bad('RESUMED', 'verified must be true');
  const fetch = fetchReport(o.fetch, 'RESUMED');
  const n = (x: Json, k: string) => num(x, k, 'RESUMED');
  return {
    verified: true, running: bool(o, 'running', 'RESUMED'), fetchedBytes: n(o, 'fetchedBytes'), sampleBytes: n(o, 'sampleBytes'), refsApplied: n(o, 'refsApplied'),
    mapEntries: n(o, 'mapEntries'), refRetried: n(o, 'refRetried'), fetch, digestChunks: n(o, 'digestChunks'),
  };
}

export function asQemuEnd(v: unknown): QemuEnd {
  const o = object(v, 'QEMU_END');
  return { streamBytes: int(o, 'streamBytes', 'QEMU_END'), refPages: int(o, 'refPages', 'QEMU_END') };
}

export function asQemuDone(v: unknown): QemuDone {
  const o = object(v, 'QEMU_DONE');
  const n = (k: string) => int(o, k, 'QEMU_DONE');
  return {
    streamBytes: n('streamBytes'), refPages: n('refPages'), refRetried: n('refRetried'), fetchedBytes: n('fetchedBytes'),
    qemuClosed: bool(o, 'qemuClosed', 'QEMU_DONE'), fetch: fetchReport(o.fetch, 'QEMU_DONE'),
  };
}

export function asError(v: unknown): ErrorBody {
  const o = object(v, 'ERROR');
  return { code: str(o, 'code', 'ERROR', 64), message: str(o, 'message', 'ERROR', 4096) };
}
