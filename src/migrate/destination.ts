/**
 * The destination side of a live migration (DESIGN.md, "Data flow", steps 3–5).
 * States: LISTENING → HANDSHAKE → RECEIVING → DRAINING → VERIFYING → RUNNING, or
 * FAILED from any of them (docs/protocol.md has the diagram). Full and zero pages
 * land in memory; references go to the fetch queue. After COMPLETE it drains the
 * queue (pages whose reference failed come again in full), checks per-region
 * keyed digests against the source's, and only then starts the guest from its
 * device state, with a p2b map that starts from the references that arrived.
 */
import net from 'node:net';
import { once } from 'node:events';
import type { Worker } from 'node:worker_threads';
import { PAGE_SIZE } from '../guest/layout.ts';
import { GuestMemory } from '../guest/memory.ts';
import { Guest } from '../guest/guest.ts';
import type { DeviceState } from '../guest/messages.ts';
import { P2bMap, P2B } from '../p2b/map.ts';
import { openBackend } from '../storage/open.ts';
import type { BlockBackend } from '../storage/backend.ts';
import { Connection, parseJson } from '../wire/connection.ts';
import { FRAME, ENCODING, WireError, MAX_FRAME, FRAME_BYTES_PER_PAGE } from '../wire/frames.ts';
import { decodePages, encodePageRequest, decodeMapCorrections } from '../wire/pages.ts';
import { NO_BLOCK } from '../p2b/map.ts';
import { CAPABILITIES, chooseVersion, pageHash, type Hello, type Welcome } from '../wire/handshake.ts';
import { FetchQueue, FETCH_DEFAULTS, type FetchOptions } from './fetch-queue.ts';
import { HashPool } from './hash-pool.ts';
import { MemoryDigests } from './memory-digests.ts';
import { phaseTrace } from '../util/trace.ts';
import { cpuMsSince } from '../util/process-usage.ts';
import type { ResumedReport } from './result.ts';

export type DestinationState = 'listening' | 'handshake' | 'receiving' | 'draining' | 'verifying' | 'running' | 'paused' | 'failed';

export interface IncomingOptions {
  host: string;
  port: number;
  /** The guest's disk as this host sees it; by default the source's spec. */
  disk?: string;
  stateDir: (guestName: string) => string;
  /**
   * The guest's memory size, if known ahead: memory is allocated and faulted in and
   * the guest's worker booted before any source connects, out of the migration's way.
   * A guest of another size is refused.
   */
  memoryBytes?: number;
  /** Fetch queue tuning (defaults: FETCH_DEFAULTS). */
  fetch?: Partial<FetchOptions>;
  /** Leave the arrived guest paused instead of resuming it (QEMU's -S): someone compares memories first. */
  hold?: boolean;
}

export interface Incoming {
  port: number;
  state: () => DestinationState;
  /** Resolves with the running guest once a migration has arrived and been verified. */
  guest: Promise<Guest>;
  close: () => void;
}

/** Compares the source's storage sample with what this host reads. */
async function checkStorage(storage: BlockBackend, key: Buffer, hello: Hello): Promise<{ match: boolean; reason?: string; bytes: number }> {
  if (storage.size !== hello.storage.size) return { match: false, reason: `size differs: ${storage.size} here, ${hello.storage.size} at the source`, bytes: 0 };
  const buf = Buffer.allocUnsafe(PAGE_SIZE);
  let bytes = 0;
  for (const s of hello.storage.sample) {
    await storage.readInto(buf, s.block * PAGE_SIZE);
    bytes += PAGE_SIZE;
    if (pageHash(key, buf).toString('hex') !== s.hash) return { match: false, reason: `block ${s.block} differs`, bytes };
  }
  return { match: true, bytes };
}

/** What a destination prepares before a source connects (IncomingOptions.memoryBytes). Used once. */
interface Prepared {
  memory: GuestMemory;
  map: P2bMap;
  worker: Worker;
  hasher: HashPool;
}

function prepare(memoryBytes: number): Prepared {
  const memory = GuestMemory.allocate(memoryBytes);
  memory.faultIn();
  return { memory, map: P2bMap.allocate(memory.pages), worker: Guest.spareWorker(), hasher: new HashPool(null, memory.shared()) };
}

export async function listenIncoming(opts: IncomingOptions): Promise<Incoming> {
  let state: DestinationState = 'listening';
  let prepared = opts.memoryBytes ? prepare(opts.memoryBytes) : null;
  let closed = false;
  let resolveGuest!: (g: Guest) => void;
  let rejectGuest!: (e: Error) => void;
  const guest = new Promise<Guest>((res, rej) => ((resolveGuest = res), (rejectGuest = rej)));
  guest.catch(() => {});
  const server = net.createServer();
  let busy = false;
  server.on('connection', (socket) => {
    // One migration per listener; a second peer is told so and dropped.
    if (busy) {
      const c = new Connection(socket);
      void c.sendJson(FRAME.ERROR, { code: 'MIGRATE_BUSY', message: 'this destination is already receiving a guest' }).finally(() => c.close());
      return;
    }
    busy = true;
    const ready = prepared;
    prepared = null; // a failed attempt may have written it: the next one starts clean
    receive(new Connection(socket), opts, ready, (s) => (state = s)).then(
      (g) => {
        server.close();
        resolveGuest(g);
      },
      () => {
        state = 'failed';
        busy = false; // a failed attempt leaves the destination ready for another
        if (opts.memoryBytes && !closed) prepared = prepare(opts.memoryBytes);
      },
    );
  });
  server.listen(opts.port, opts.host);
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    state: () => state,
    guest,
    close: () => {
      closed = true;
      server.close();
      void prepared?.worker.terminate();
      void prepared?.hasher.close();
      rejectGuest(new WireError('MIGRATE_CANCELLED', 'the destination stopped waiting'));
    },
  };
}

async function receive(conn: Connection, opts: IncomingOptions, ready: Prepared | null, setState: (s: DestinationState) => void): Promise<Guest> {
  let storage: BlockBackend | null = null;
  let guest: Guest | null = null;
  let starting: Promise<Guest> | null = null;
  let hasher: HashPool | null = null;
  const trace = phaseTrace('dest');
  try {
    setState('handshake');
    const cpu0 = process.cpuUsage();
    const hello = await conn.readJson<Hello & { storage: { spec: string } }>(FRAME.HELLO);
    if (hello.protocol !== 'livemig') throw new WireError('MIGRATE_PROTOCOL', 'not a livemig migration');
    const version = chooseVersion(hello);
    const missing = ['pages.full', 'pages.zero'].filter((c) => !hello.capabilities.includes(c));
    if (missing.length) throw new WireError('MIGRATE_CAPABILITY', `source lacks ${missing.join(', ')}`);
    if (hello.guest.pageSize !== PAGE_SIZE) throw new WireError('MIGRATE_LAYOUT', `page size ${hello.guest.pageSize} is not ${PAGE_SIZE}`);
    const declared = Number.isSafeInteger(hello.guest?.memoryBytes) && hello.guest.memoryBytes > 0 ? hello.guest.memoryBytes : 0;
    conn.maxFrame = Math.min(1 << 30, Math.max(MAX_FRAME, Math.ceil(declared / PAGE_SIZE) * FRAME_BYTES_PER_PAGE));
    const key = Buffer.from(hello.key, 'hex');
    if (key.length < 16) throw new WireError('MIGRATE_PROTOCOL', 'the migration key must have at least 128 bits');
    if (ready && ready.memory.memoryBytes !== hello.guest.memoryBytes) {
      throw new WireError('MIGRATE_LAYOUT', `this destination was prepared for ${ready.memory.memoryBytes} bytes of memory; the guest has ${hello.guest.memoryBytes}`);
    }
    const memory = ready?.memory ?? GuestMemory.allocate(hello.guest.memoryBytes);
    const pages = memory.pages;
    const disk = opts.disk ?? hello.storage.spec;
    storage = await openBackend(disk, { readOnly: true, lock: false }).catch((e: Error) => {
      throw new WireError('MIGRATE_STORAGE', `cannot open the guest's disk ${disk} here: ${e.message}`);
    });
    const check = await checkStorage(storage, key, hello);
    const welcome: Welcome = { version, capabilities: [...CAPABILITIES], storageMatch: check.match, ...(check.reason ? { storageReason: check.reason } : {}) };
    await conn.sendJson(FRAME.WELCOME, welcome);
    trace('welcome sent');

    // Start the guest's worker now, paused, with no disk and no workload: at the end only
    // the device state and the disk remain to hand over, which keeps downtime short. Pages are
    // received meanwhile: waiting for the worker would stall the source's first round.
    const map = ready?.map ?? P2bMap.allocate(pages);
    starting = Guest.start({
      name: hello.guest.name,
      memoryBytes: hello.guest.memoryBytes,
      disk,
      workload: hello.guest.workload,
      options: hello.guest.options as unknown as Guest['config']['options'],
      stateDir: opts.stateDir(hello.guest.name),
      memory,
      map,
      deferDevice: true,
      freshMap: true,
      spareWorker: ready?.worker,
    });
    let startFailure: Error | null = null;
    starting.then((g) => ((guest = g), trace('guest worker ready')), (e: Error) => (startFailure = e));

    setState('receiving');
    const lastSeq = new Uint32Array(pages);
    const awaitingFull = new Set<number>();
    const requestFull = (list: number[]) => {
      for (const p of list) awaitingFull.add(p);
      void conn.send(FRAME.PAGE_REQUEST, encodePageRequest(list)).catch(() => {});
    };
    hasher = ready?.hasher ?? new HashPool(null, memory.shared());
    hasher.setKey(key);
    // Kept current from this side's dirty log (every page applied marks it) whenever the fetch
    // queue is idle, so that after COMPLETE only the last pages' chunks need hashing.
    const digests = new MemoryDigests(hasher, pages, key, true);
    const queue = new FetchQueue(storage, hasher, memory, lastSeq, requestFull, {
      ...FETCH_DEFAULTS, ...opts.fetch,
    });
    let device: DeviceState | null = null;
    let complete: { lastSeq: number } | null = null;
    let sourceDigests: string[] | null = null;
    let corrections: [number, number][] = [];
    let refsReceived = 0;
    const backlog = { max: 0, sum: 0, samples: 0 };
    const tStart = performance.now();
    // Progress on the return path lets the source count the fetch backlog and the hashing still
    // owed for verification in its downtime estimate.
    const progress = setInterval(() => {
      digests.readDirty(memory.dirty);
      if (queue.idle) void digests.refresh(); // never while references land all over memory
      const st = queue.stats;
      const waiting = queue.backlog + queue.inFlightPages;
      backlog.max = Math.max(backlog.max, waiting);
      backlog.sum += waiting;
      backlog.samples++;
      const elapsed = (performance.now() - tStart) / 1000;
      void conn
        .sendJson(FRAME.PROGRESS, {
          refsReceived, pending: waiting, applied: st.applied, bytesRead: st.bytesRead,
          readRate: st.totalLatencyMs > 0 ? st.bytesRead / elapsed : 0, verifyMs: digests.estimateMs(),
        })
        .catch(() => {});
    }, 50);

    const apply = (payload: Buffer) =>
      decodePages(payload, pages, (e) => {
        if (e.encoding === ENCODING.REF_RUN && 'count' in e) {
          // Page by page as for single entries; the queue applies only pages whose version is still this one.
          for (let i = 0; i < e.count; i++) {
            if (e.seq + i <= lastSeq[e.page + i]) continue;
            lastSeq[e.page + i] = e.seq + i;
            awaitingFull.delete(e.page + i);
          }
          refsReceived += e.count;
          if (!check.match) requestFull(Array.from({ length: e.count }, (_, i) => e.page + i));
          else queue.add(e.page, e.block, e.hash, e.seq, e.count);
          return;
        }
        if (e.seq <= lastSeq[e.page]) return; // an older version overtaken by a newer one
        lastSeq[e.page] = e.seq;
        // Any newer version settles a request for this page (a reference that fails again re-requests it).
        awaitingFull.delete(e.page);
        if (e.encoding === ENCODING.FULL && 'data' in e) {
          memory.setPage(e.page, e.data);
          queue.appliedBlock.delete(e.page);
          awaitingFull.delete(e.page);
        } else if (e.encoding === ENCODING.ZERO) {
          memory.zeroPage(e.page);
          queue.appliedBlock.delete(e.page);
          awaitingFull.delete(e.page);
        } else if (e.encoding === ENCODING.REF && 'block' in e) {
          refsReceived++;
          if (!check.match) requestFull([e.page]);
          else queue.add(e.page, e.block, e.hash, e.seq);
        } else requestFull([e.page]); // an encoding this side does not know: ask for the bytes
      });

    // One reader for the whole session (pages answering our requests may follow the digests);
    // the steps below wait on what it has seen. It ends when the link closes.
    let readerFailure: Error | null = null;
    let wake: (() => void) | null = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    void (async () => {
      for (;;) {
        const f = await conn.read();
        if (f.type === FRAME.PAGES) apply(f.payload);
        else if (f.type === FRAME.DEVICE_STATE) device = parseJson<DeviceState>(f);
        else if (f.type === FRAME.COMPLETE) complete = parseJson(f);
        else if (f.type === FRAME.MAP) corrections = decodeMapCorrections(f.payload, pages);
        else if (f.type === FRAME.DIGESTS) sourceDigests = parseJson<{ digests: string[] }>(f).digests;
        else if (f.type === FRAME.ERROR) {
          const e = parseJson<{ code: string; message: string }>(f);
          throw new WireError(e.code, `source: ${e.message}`);
        } else throw new WireError('MIGRATE_PROTOCOL', `unexpected frame ${f.type} while receiving`);
        notify();
      }
    })().catch((e: Error) => {
      readerFailure = e;
      notify();
    });
    /** Resolves once cond holds (checked after every frame, and every 50 ms for the fetch queue). */
    const storageFailed = () => new WireError('MIGRATE_STORAGE', `reading the guest's disk failed: ${queue.error!.message}`);
    const waitFor = async (cond: () => boolean) => {
      while (!cond()) {
        if (readerFailure) throw readerFailure;
        if (startFailure) throw startFailure;
        if (queue.error) throw storageFailed(); // fail now: the source is waiting on this backlog
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 50);
        });
      }
      if (readerFailure && !cond()) throw readerFailure;
    };
    await waitFor(() => complete !== null).finally(() => clearInterval(progress));

    trace('complete received');
    setState('draining');
    // Re-requested pages arrive as PAGES frames after COMPLETE; wait until none is owed.
    for (;;) {
      await queue.drain().catch(() => {
        throw storageFailed();
      });
      if (awaitingFull.size === 0 && queue.idle) break;
      await waitFor(() => awaitingFull.size === 0);
    }
    if (!device) throw new WireError('MIGRATE_PROTOCOL', 'no device state before COMPLETE');

    trace('drained');
    setState('verifying');
    digests.readDirty(memory.dirty);
    await digests.settle();
    const mine = digests.regionDigests(memory.layout);
    await waitFor(() => sourceDigests !== null);
    const bad = mine.findIndex((d, i) => d !== sourceDigests![i]);
    if (bad >= 0 || mine.length !== sourceDigests!.length) {
      throw new WireError('MIGRATE_VERIFY_FAILED', `memory region ${bad} differs from the source after transfer`);
    }

    trace(`verified (${digests.hashedChunks} chunks hashed in all)`);
    // The map travels with the guest: verified references, corrected by the source's map at pause.
    for (const [page, block] of corrections) {
      if (block === NO_BLOCK) queue.appliedBlock.delete(page);
      else queue.appliedBlock.set(page, block);
    }
    map.restoreAll(queue.appliedBlock, P2B.READ);
    trace('map restored');
    await storage.close();
    storage = null;
    trace('storage closed');
    guest = await starting;
    await guest.loadDevice(device as DeviceState); // attaches the disk: the source released it at pause
    trace('device loaded');
    if (!opts.hold) await guest.resume();
    setState(opts.hold ? 'paused' : 'running');
    trace('guest started');
    const s = queue.stats;
    const report: ResumedReport = {
      verified: true,
      running: !opts.hold,
      fetchedBytes: s.bytesRead,
      sampleBytes: check.bytes,
      refsApplied: s.applied,
      mapEntries: queue.appliedBlock.size,
      refRetried: s.mismatched,
      fetch: {
        reads: s.reads,
        maxInFlight: s.maxInFlight,
        meanLatencyMs: s.reads ? Math.round((s.totalLatencyMs / s.reads) * 100) / 100 : 0,
        stale: s.stale,
        busyMs: Math.round(s.busyMs),
        readRate: s.busyMs > 0 ? Math.round(s.bytesRead / (s.busyMs / 1000)) : 0,
        maxBacklog: backlog.max,
        meanBacklog: backlog.samples ? Math.round(backlog.sum / backlog.samples) : 0,
      },
      cpuMs: cpuMsSince(cpu0),
      peakRss: process.resourceUsage().maxRSS * 1024,
      digestChunks: digests.hashedChunks,
    };
    await conn.sendJson(FRAME.RESUMED, report);
    conn.close();
    void hasher.close();
    return guest;
  } catch (err) {
    const e = err as Error & { code?: string };
    await conn.sendJson(FRAME.ERROR, { code: e.code ?? 'MIGRATE_FAILED', message: e.message }).catch(() => {});
    conn.destroy();
    if (storage) await storage.close().catch(() => {});
    guest ??= starting ? await starting.catch(() => null) : null;
    if (guest) await guest.stop().catch(() => {}); // never resumed: the source keeps the guest
    else if (ready) await ready.worker.terminate().catch(() => {});
    if (ready && !hasher) await ready.hasher.close().catch(() => {});
    if (hasher) await hasher.close().catch(() => {});
    throw err;
  }
}
