/**
 * The source side of a live migration (DESIGN.md, "Data flow", steps 2 and 4).
 * Rounds over the dirty log; each page goes as zero, as a block reference (p2b
 * strategy, storage identical on both sides, mapping referenceable now), or in
 * full. Stops iterating when the downtime estimated from the averaged bandwidth
 * fits the limit; then pauses the guest, flushes, sends the rest and the device
 * state, and keeps the guest until the destination says it runs. Any failure
 * before that resumes the guest here: nothing is lost.
 */
import { randomBytes } from 'node:crypto';
import { PAGE_SIZE } from '../guest/layout.ts';
import type { Guest } from '../guest/guest.ts';
import { openBackend } from '../storage/open.ts';
import { Connection, parseJson } from '../wire/connection.ts';
import { FRAME, MAX_REF_RUN, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, WireError } from '../wire/frames.ts';
import { PageBatch, decodePageRequest, encodeMapCorrections } from '../wire/pages.ts';
import { NO_BLOCK } from '../p2b/map.ts';
import { CAPABILITIES, pageHash, sampleBlocks, type Hello, type Welcome } from '../wire/handshake.ts';
import { RateLimit } from './rate-limit.ts';
import { BandwidthMeter } from './bandwidth.ts';
import { HashPool } from './hash-pool.ts';
import { MemoryDigests } from './memory-digests.ts';
import { phaseTrace } from '../util/trace.ts';
import type { MigrationResult, ResumedReport, RoundStats, Strategy } from './result.ts';
import { cpuMsSince } from '../util/process-usage.ts';

export interface MigrateOptions {
  host: string;
  port: number;
  strategy: Strategy;
  /** Bytes per second; 0 for no limit. */
  maxBandwidth: number;
  downtimeLimitMs: number;
  maxRounds: number;
  /** When rounds do not converge: throttle the guest step by step, or give up. */
  converge: 'throttle' | 'abort';
  onRound?: (r: RoundStats) => void;
  /** How long to wait for the destination to verify and resume after stop-and-copy. */
  completeTimeoutMs?: number;
  /** After the switch-over keep the guest here, paused with memory intact ('postmigrate'), instead of stopping it. */
  keepPaused?: boolean;
}

export class MigrationError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'MigrationError';
  }
}

/** Storage identity: name, size and keyed digests of sampled blocks (read without taking the guest's lock). */
async function storageIdentity(spec: string, key: Buffer): Promise<Hello['storage'] & { spec: string }> {
  const backend = await openBackend(spec, { readOnly: true, lock: false });
  try {
    const blocks = Math.floor(backend.size / PAGE_SIZE);
    const buf = Buffer.allocUnsafe(PAGE_SIZE);
    const sample: { block: number; hash: string }[] = [];
    for (const block of sampleBlocks(key, blocks)) {
      await backend.readInto(buf, block * PAGE_SIZE);
      sample.push({ block, hash: pageHash(key, buf).toString('hex') });
    }
    return { spec, description: backend.description, size: backend.size, sample };
  } finally {
    await backend.close();
  }
}

/** Hashing threads booted ahead for a guest (about 80 ms of CPU), kept across failed attempts. */
const pools = new WeakMap<Guest, HashPool>();

/** Boots the hashing threads a migration of this guest will use, so that its time does not include that. */
export function prepareMigration(guest: Guest): void {
  if (!pools.has(guest)) pools.set(guest, new HashPool(null, guest.memory.shared()));
}

export async function migrate(guest: Guest, opts: MigrateOptions): Promise<MigrationResult> {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const trace = phaseTrace('source');
  const key = randomBytes(32);
  const memory = guest.memory;
  const map = guest.map;
  const pages = memory.pages;
  const conn = await Connection.connect(opts.host, opts.port).catch((e: WireError) => {
    throw new MigrationError(e.code, e.message);
  });
  const limit = new RateLimit(opts.maxBandwidth);
  prepareMigration(guest);
  const hasher = pools.get(guest)!;
  hasher.setKey(key);
  const meter = new BandwidthMeter();
  const digests = new MemoryDigests(hasher, pages, key);
  /** Reads and clears the dirty log; the digests learn of every write through here. */
  const takeDirty = () => digests.readDirty(memory.dirty);
  const totals = { full: 0, zero: 0, ref: 0, refRetried: 0 };
  const roundStats: RoundStats[] = [];
  let seq = 0;
  let throttle = 0;
  let paused = false;
  let wasRunning = false;
  let detached = false;
  let failure: Error | null = null;
  const requested = new Set<number>();
  interface FetchProgress { refsReceived: number; pending: number; readRate: number; verifyMs?: number }
  let progress: FetchProgress = { refsReceived: 0, pending: 0, readRate: 0 };
  let refsSent = 0;
  /** The block of the last reference sent for each page (NO_BLOCK after a full or zero send). */
  const lastRef = new Uint32Array(pages).fill(NO_BLOCK);
  /** How long the destination still needs for references already sent (its fetch backlog). */
  const fetchBacklogMs = () => {
    const backlog = progress.pending + (refsSent - progress.refsReceived);
    if (backlog <= 0) return 0;
    return progress.readRate > 0 ? ((backlog * PAGE_SIZE) / progress.readRate) * 1000 : Infinity;
  };
  let resumed!: (r: ResumedReport) => void;
  const resumedReport = new Promise<ResumedReport>((r) => (resumed = r));
  let failed!: (e: Error) => void;
  const failedSignal = new Promise<never>((_, reject) => (failed = reject));
  failedSignal.catch(() => {});

  try {
    const status = await guest.status();
    const storage = await storageIdentity(guest.config.disk, key);
    const hello: Hello & { storage: { spec: string } } = {
      protocol: 'livemig',
      versionMin: PROTOCOL_VERSION_MIN,
      versionMax: PROTOCOL_VERSION,
      capabilities: [...CAPABILITIES],
      guest: {
        name: guest.config.name,
        workload: guest.config.workload,
        options: { ...guest.config.options },
        memoryBytes: memory.memoryBytes,
        pageSize: PAGE_SIZE,
        regions: memory.layout.map((r) => ({ firstPage: r.firstPage, pages: r.pages })),
      },
      storage,
      key: key.toString('hex'),
      strategy: opts.strategy,
    };
    if (status.state !== 'running' && status.state !== 'paused') throw new MigrationError('MIGRATE_GUEST_STATE', `guest is ${status.state}`);
    wasRunning = status.state === 'running';
    await conn.sendJson(FRAME.HELLO, hello);
    trace('hello sent');
    const welcome = await conn.readJson<Welcome>(FRAME.WELCOME).catch((e: WireError) => {
      throw new MigrationError(e.code, `destination refused the migration: ${e.message}`);
    });
    const useRefs = opts.strategy === 'p2b' && welcome.storageMatch;
    const maxRun = welcome.capabilities.includes('pages.ref-run') ? MAX_REF_RUN : 1;

    // The return path: page requests, progress, the final word.
    void (async () => {
      for (;;) {
        const f = await conn.read();
        if (f.type === FRAME.PAGE_REQUEST) {
          const list = decodePageRequest(f.payload, pages);
          totals.refRetried += list.length;
          for (const p of list) requested.add(p);
          if (paused) await sendPages(list, false); // the guest is still: send now, in full
        } else if (f.type === FRAME.PROGRESS) progress = parseJson<FetchProgress>(f);
        else if (f.type === FRAME.RESUMED) return resumed(parseJson<ResumedReport>(f));
        else if (f.type === FRAME.ERROR) {
          const e = parseJson<{ code: string; message: string }>(f);
          throw new MigrationError(e.code, `destination: ${e.message}`);
        }
      }
    })().catch((e: Error) => {
      failure ??= e instanceof WireError ? new MigrationError(e.code, e.message) : e;
      failed(failure);
    });

    const batch = new PageBatch(256);
    const flushBatch = async () => {
      if (batch.count === 0) return;
      const payload = batch.take();
      await limit.take(payload.length + 8);
      await conn.send(FRAME.PAGES, payload);
    };
    /** Sends pages; `allowRefs` false forces full pages (for re-requested ones). */
    async function sendPages(list: Iterable<number>, allowRefs: boolean): Promise<{ full: number; zero: number; ref: number; bytes: number }> {
      const before = { ...batch.counts };
      const sentBefore = conn.bytesSent;
      // Reference candidates are hashed in batches on the pool, straight from guest memory, as
      // runs: consecutive pages on consecutive blocks share one reference and one hash.
      const runs: number[] = []; // firstPage, count pairs
      const runBlocks: number[] = [];
      let candidates = 0;
      const addCandidate = (p: number, block: number) => {
        const n = runs.length;
        const extend = n > 0 && runs[n - 2] + runs[n - 1] === p && runBlocks[(n >> 1) - 1] + runs[n - 1] === block && runs[n - 1] < maxRun && (p & 0x3ffff) !== 0; // not across a 1 GiB region
        if (extend) runs[n - 1]++;
        else {
          runs.push(p, 1);
          runBlocks.push(block);
        }
        candidates++;
      };
      const flushCandidates = async () => {
        if (!candidates) return;
        const hashes = await hasher.hashMemory(Uint32Array.from(runs));
        for (let r = 0; r < runBlocks.length; r++) {
          const [first, count, block] = [runs[2 * r], runs[2 * r + 1], runBlocks[r]];
          // A mapping may have been dropped while we hashed: then the run goes as bytes.
          let intact = true;
          for (let i = 0; i < count && intact; i++) intact = map.referenceable(first + i) && map.block[first + i] === block + i;
          if (intact) {
            const hash = hashes.subarray(r * 16, r * 16 + 16);
            if (count === 1) batch.addRef(first, seq + 1, block, hash);
            else batch.addRefRun(first, seq + 1, block, count, hash);
            seq += count;
            for (let i = 0; i < count; i++) lastRef[first + i] = block + i;
            refsSent += count;
          } else {
            for (let i = 0; i < count; i++) {
              batch.addFull(first + i, ++seq, memory.page(first + i));
              lastRef[first + i] = NO_BLOCK;
              if (batch.full) await flushBatch();
            }
          }
          if (batch.full) await flushBatch();
        }
        runs.length = 0;
        runBlocks.length = 0;
        candidates = 0;
      };
      for (const p of list) {
        if (failure) throw failure;
        if (allowRefs && useRefs && map.referenceable(p)) {
          addCandidate(p, map.block[p]);
          if (candidates >= 1024) await flushCandidates();
          continue;
        }
        seq++;
        lastRef[p] = NO_BLOCK;
        if (memory.isZero(p)) batch.addZero(p, seq);
        else batch.addFull(p, seq, memory.page(p));
        if (batch.full) await flushBatch();
      }
      await flushCandidates();
      await flushBatch();
      const c = batch.counts;
      return { full: c.full - before.full, zero: c.zero - before.zero, ref: c.ref - before.ref, bytes: conn.bytesSent - sentBefore };
    }

    const takeRequested = () => {
      const list = [...requested];
      requested.clear();
      return list;
    };

    // Round 0 sends everything; the dirty log is cleared first so it records what changes meanwhile.
    trace('welcome received');
    takeDirty();
    void digests.refresh(); // from the start: a link-bound round 0 leaves the cores time for it
    let toSend: Iterable<number> = { [Symbol.iterator]: function* () { for (let p = 0; p < pages; p++) yield p; } };
    let round = 0;
    let slowRounds = 0; // rounds where the link, not the settling work, kept us from stopping
    let lastSettleMs = Infinity;
    let stalledSince: number | null = null; // since when the settling work stopped shrinking
    for (;;) {
      if (failure) throw failure;
      const tr = performance.now();
      const retry = takeRequested();
      const sent = await sendPages(toSend, true);
      const again = await sendPages(retry, false);
      const ms = performance.now() - tr;
      meter.record(sent.bytes + again.bytes, ms);
      const dirty = takeDirty();
      void digests.refresh(); // in the background: at pause only chunks written since need hashing
      const perPage = (sent.bytes + again.bytes) / Math.max(1, sent.full + sent.zero + sent.ref + again.full + again.zero);
      const linkMs = meter.estimateMs(dirty.length * perPage);
      // At pause both sides finish their memory digests, the destination after draining its
      // fetch queue; the two hosts do this at once.
      const settleMs = Math.max(fetchBacklogMs() + (progress.verifyMs ?? 0), digests.estimateMs());
      const estimate = linkMs + settleMs;
      const stats: RoundStats = {
        round, pages: sent.full + sent.zero + sent.ref, full: sent.full + again.full, zero: sent.zero + again.zero, ref: sent.ref,
        bytes: sent.bytes + again.bytes, ms, dirtyAfter: dirty.length, estimatedDowntimeMs: estimate, throttle,
      };
      roundStats.push(stats);
      opts.onRound?.(stats);
      round++;
      toSend = dirty;
      // The settling work (fetching, hashing) shrinks while we wait, at no cost in link bytes, so
      // fitting the limit is not enough: wait until it is small, as long as it keeps shrinking.
      const fits = estimate <= opts.downtimeLimitMs;
      if (!fits || settleMs < lastSettleMs) stalledSince = null;
      else stalledSince ??= performance.now();
      lastSettleMs = settleMs;
      if (fits && (settleMs <= opts.downtimeLimitMs / 4 || performance.now() - (stalledSince ?? Infinity) > 4 * opts.downtimeLimitMs)) break;
      if (linkMs <= opts.downtimeLimitMs) {
        // Only the settling work is behind: let it catch up, then send what got dirty.
        await new Promise((r) => setTimeout(r, Math.min(100, Math.max(10, settleMs / 4))));
        if (round < 10_000) continue;
      }
      slowRounds++;
      if (slowRounds >= opts.maxRounds) {
        if (opts.converge === 'abort') {
          throw new MigrationError('MIGRATE_NOT_CONVERGED', `not converged after ${round} rounds: ${dirty.length} pages dirty, estimated downtime ${estimate.toFixed(0)} ms > ${opts.downtimeLimitMs} ms`);
        }
        break; // auto-converge has done what it could: accept the longer downtime
      }
      if (opts.converge === 'throttle' && slowRounds >= 2) {
        // Auto-converge: the guest dirties faster than we send; take CPU time from it step by step.
        throttle = Math.min(99, throttle ? throttle + 10 : 20);
        await guest.throttle(throttle);
      }
    }

    // Stop-and-copy.
    const tPause = performance.now();
    trace('pausing');
    await guest.pause(); // waits for a safe point and flushes the disk: write mappings are referenceable now
    paused = true;
    trace('paused');
    await guest.detachDisk(); // the destination will be the disk's one writer from its resume on
    trace('disk detached');
    detached = true;
    const retry = takeRequested();
    const last = new Set<number>([...takeDirty(), ...(toSend as Uint32Array)]);
    for (const p of retry) last.delete(p);
    const fin = await sendPages(last, true);
    const again = await sendPages(retry, false); // a page whose reference failed goes in full
    fin.full += again.full;
    fin.zero += again.zero;
    fin.bytes += again.bytes;
    roundStats.push({ round, pages: last.size, full: fin.full, zero: fin.zero, ref: fin.ref, bytes: fin.bytes, ms: performance.now() - tPause, dirtyAfter: 0, estimatedDowntimeMs: 0, throttle });
    opts.onRound?.(roundStats[roundStats.length - 1]);
    trace('last pages sent');
    const settled = digests.settle(); // memory is still now: hash what changed while the rest goes out
    if (useRefs) {
      // The destination's map starts from the references it verified; a block written after its
      // fetch, or a mapping made since, would leave it wrong. Send what differs from the map at pause.
      const corrections: [number, number][] = [];
      for (let p = 0; p < pages; p++) {
        const want = map.referenceable(p) ? map.block[p] : NO_BLOCK;
        if (want !== lastRef[p]) corrections.push([p, want]);
      }
      await conn.send(FRAME.MAP, encodeMapCorrections(corrections));
      trace(`map corrections sent (${corrections.length})`);
    }
    await conn.sendJson(FRAME.DEVICE_STATE, await guest.deviceState());
    trace('device state sent');
    await conn.sendJson(FRAME.COMPLETE, { lastSeq: seq });
    trace('complete sent');
    await settled;
    await conn.sendJson(FRAME.DIGESTS, { digests: digests.regionDigests(memory.layout) });
    trace(`digests sent (${digests.hashedChunks} chunks hashed in all)`);
    const timeout = opts.completeTimeoutMs ?? 120_000;
    const report = await Promise.race([
      resumedReport,
      failedSignal,
      new Promise<never>((_, reject) => setTimeout(() => reject(new MigrationError('MIGRATE_TIMEOUT', `the destination did not resume within ${timeout} ms`)), timeout).unref()),
    ]);
    const tEnd = performance.now();
    const cpuMs = cpuMsSince(cpu0);
    const downtimeMs = tEnd - tPause;
    trace('resumed received');
    for (const r of roundStats) {
      totals.full += r.full;
      totals.zero += r.zero;
      totals.ref += r.ref;
    }
    conn.close();
    pools.delete(guest);
    void hasher.close();
    if (opts.keepPaused) guest.markMigrated();
    else await guest.stop(); // the guest runs on the destination now
    return {
      strategy: opts.strategy,
      workload: guest.config.workload,
      memoryBytes: memory.memoryBytes,
      verified: report.verified,
      totalTimeMs: Math.round(tEnd - t0),
      downtimeMs: Math.round(downtimeMs),
      rounds: roundStats.length,
      linkBytes: conn.bytesSent + conn.bytesReceived,
      nasBytes: report.fetchedBytes + report.sampleBytes,
      pages: totals,
      storageMatch: welcome.storageMatch,
      mapEntries: report.mapEntries,
      ...(welcome.storageReason ? { storageReason: welcome.storageReason } : {}),
      downtimeLimitMs: opts.downtimeLimitMs,
      maxBandwidth: opts.maxBandwidth,
      averageBandwidth: Math.round(meter.average()),
      finalThrottle: throttle,
      roundStats,
      fetch: report.fetch,
      cpu: { sourceMs: cpuMs, destinationMs: report.cpuMs },
      peakRss: { source: process.resourceUsage().maxRSS * 1024, destination: report.peakRss },
      digestChunks: { source: digests.hashedChunks, destination: report.digestChunks },
    };
  } catch (err) {
    // Before the destination confirmed: the guest goes on here, memory and disk untouched.
    conn.destroy(); // the hashing threads stay for another attempt (they keep nothing alive when idle)
    if (detached) await guest.attachDisk().catch(() => {});
    if (throttle) await guest.throttle(0).catch(() => {});
    if (paused && wasRunning) await guest.resume().catch(() => {});
    // A link that dropped under a send may have carried the destination's reason first.
    if ((err as WireError).code === 'MIGRATE_LINK_LOST') await Promise.race([failedSignal, new Promise((r) => setTimeout(r, 100))]).catch(() => {});
    const reason = failure ?? err;
    if (reason instanceof MigrationError) throw reason;
    if (reason instanceof WireError) throw new MigrationError(reason.code, reason.message);
    throw reason;
  }
}
