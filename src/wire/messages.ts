/**
 * The JSON payloads of the protocol, typed, and their validation on receipt: a
 * payload that lacks a field, has one of the wrong type or out of range is a
 * protocol error before anything acts on it (units in docs/protocol.md).
 */
import { LivemigError } from '../errors.ts';
import { HASH_BYTES, PAGE_SIZE, REGION_PAGES, STORAGE_SAMPLES, PROTOCOL_NAME } from './protocol.ts';

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
  /** The migration key (hex, at least 16 bytes): keys every page hash and digest. */
  key: string;
  strategy: string;
  /** The source guest's lease on the disk, where the storage grants leases: the destination takes it over before it resumes. */
  lease?: { token: string; epoch: number };
}

export interface Welcome {
  version: number;
  capabilities: string[];
  storageMatch: boolean;
  storageReason?: string;
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
  return { name: str(g, 'name', 'HELLO.guest', 256), workload: str(g, 'workload', 'HELLO.guest', 64), options, memoryBytes, pageSize, regions };
}

function storageIdentity(v: unknown): StorageIdentity {
  const s = object(v, 'HELLO.storage');
  const sample = list(s, 'sample', 'HELLO.storage', STORAGE_SAMPLES).map((x, i) => {
    const o = object(x, `HELLO.storage.sample[${i}]`);
    const hash = str(o, 'hash', 'HELLO.storage.sample', 64);
    if (!hex(hash, HASH_BYTES)) bad('HELLO.storage.sample', `hash must be ${HASH_BYTES} bytes of hex`);
    return { block: int(o, 'block', 'HELLO.storage.sample'), hash };
  });
  return { spec: str(s, 'spec', 'HELLO.storage'), description: str(s, 'description', 'HELLO.storage'), size: int(s, 'size', 'HELLO.storage'), sample };
}

function leaseOf(v: unknown): { token: string; epoch: number } {
  const l = object(v, 'HELLO.lease');
  return { token: str(l, 'token', 'HELLO.lease', 128), epoch: int(l, 'epoch', 'HELLO.lease') };
}

export function asHello(v: unknown): Hello {
  const o = object(v, 'HELLO');
  if (o.protocol !== PROTOCOL_NAME) bad('HELLO', `not a ${PROTOCOL_NAME} migration`);
  const key = str(o, 'key', 'HELLO', 128);
  if (!/^[0-9a-f]*$/.test(key) || key.length % 2 || key.length < 32) bad('HELLO', 'the migration key must be at least 128 bits of hex');
  return {
    protocol: PROTOCOL_NAME,
    versionMin: int(o, 'versionMin', 'HELLO', 0xffff),
    versionMax: int(o, 'versionMax', 'HELLO', 0xffff),
    capabilities: strings(o, 'capabilities', 'HELLO'),
    guest: guestInfo(o.guest),
    storage: storageIdentity(o.storage),
    key,
    strategy: str(o, 'strategy', 'HELLO', 64),
    ...(o.lease === undefined ? {} : { lease: leaseOf(o.lease) }),
  };
}

export function asWelcome(v: unknown): Welcome {
  const o = object(v, 'WELCOME');
  const reason = o.storageReason === undefined ? {} : { storageReason: str(o, 'storageReason', 'WELCOME') };
  return { version: int(o, 'version', 'WELCOME', 0xffff), capabilities: strings(o, 'capabilities', 'WELCOME'), storageMatch: bool(o, 'storageMatch', 'WELCOME'), ...reason };
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

export function asResumed(v: unknown): Resumed {
  const o = object(v, 'RESUMED');
  if (o.verified !== true) bad('RESUMED', 'verified must be true');
  const f = object(o.fetch, 'RESUMED.fetch');
  const n = (x: Json, k: string) => num(x, k, 'RESUMED');
  const fetch: FetchReport = {
    reads: n(f, 'reads'), maxInFlight: n(f, 'maxInFlight'), meanLatencyMs: n(f, 'meanLatencyMs'), stale: n(f, 'stale'),
    busyMs: n(f, 'busyMs'), readRate: n(f, 'readRate'), maxBacklog: n(f, 'maxBacklog'), meanBacklog: n(f, 'meanBacklog'),
  };
  return {
    verified: true, running: bool(o, 'running', 'RESUMED'), fetchedBytes: n(o, 'fetchedBytes'), sampleBytes: n(o, 'sampleBytes'), refsApplied: n(o, 'refsApplied'),
    mapEntries: n(o, 'mapEntries'), refRetried: n(o, 'refRetried'), fetch, digestChunks: n(o, 'digestChunks'),
  };
}

export function asError(v: unknown): ErrorBody {
  const o = object(v, 'ERROR');
  return { code: str(o, 'code', 'ERROR', 64), message: str(o, 'message', 'ERROR', 4096) };
}
