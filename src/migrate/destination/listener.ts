/**
 * A destination waiting for a guest: one migration at a time per listener; a
 * second peer is turned away (wire/transport), with nothing allocated for it,
 * or, if it arrives while a failed attempt is cleaned up, waits for that. A
 * failed attempt leaves the listener ready for another, and memory prepared
 * ahead (--memory) that a refused peer never touched is kept for the next one.
 */
import { pino } from 'pino';
import { Guest } from '../../guest/guest.ts';
import { GuestMemory } from '../../guest/memory.ts';
import { P2bMap } from '../../p2b/map.ts';
import { LivemigError } from '../../errors.ts';
import { TIMEOUT, formatLinkAddress, listenLinks, type Link, type LinkAddress } from '../../wire/index.ts';
import { HashPool } from '../hash-pool.ts';
import { spareLoaded } from '../../util/ts-worker.ts';
import { DestinationSession, type DestinationState, type IncomingOptions, type Prepared } from './session.ts';
import { handshake } from './handshake.ts';
import { receive } from './receive.ts';
import { drain } from './drain.ts';
import { verify } from './verify.ts';
import { resume } from './resume.ts';
import { abort } from './abort.ts';
import { watchIdle } from './idle.ts';

export interface Incoming {
  /** The TCP port taken (0 on a Unix socket). */
  port: number;
  /** Where sources reach it: tcp://HOST:PORT or unix:PATH. */
  address: string;
  state: () => DestinationState;
  /** Resolves with the guest once a migration has arrived and been verified. */
  guest: Promise<Guest>;
  /** Nothing under way: no attempt running or being cleaned up, and the threads prepared ahead have started. */
  idle: () => boolean;
  close: () => void;
}

function prepare(memoryBytes: number): Prepared {
  const memory = GuestMemory.allocate(memoryBytes);
  memory.faultIn();
  const worker = Guest.spareWorker();
  const hasher = new HashPool(null, memory.shared());
  return { memory, map: P2bMap.allocate(memory.pages), worker, hasher, booted: Promise.all([spareLoaded(worker), hasher.booted]).then(() => {}) };
}

/** One incoming migration, phase by phase; any failure aborts it (abort.ts), `aborting` told first. */
async function incoming(s: DestinationSession, aborting: () => void): Promise<Guest> {
  let stopWatch = () => {};
  try {
    await handshake(s);
    stopWatch = watchIdle(s, s.opts.idleTimeoutMs ?? TIMEOUT.IDLE);
    await receive(s);
    await drain(s);
    await verify(s);
    return await resume(s);
  } catch (err) {
    aborting();
    return abort(s, err);
  } finally {
    stopWatch();
  }
}

/** Where the listener listens, from the options. */
function addressOf(opts: IncomingOptions): LinkAddress {
  return opts.socketPath ? { transport: 'unix', path: opts.socketPath } : { transport: 'tcp', host: opts.host, port: opts.port };
}

/** Stops prepared threads nobody will take. */
function release(p: Prepared): void {
  void p.worker.terminate();
  void p.hasher.close().catch(() => {});
}

export async function listenIncoming(opts: IncomingOptions): Promise<Incoming> {
  const log = (opts.log ?? pino({ level: 'silent' })).child({ side: 'destination' });
  let state: DestinationState = 'listening';
  let prepared: Prepared | null = null;
  /** The prepared threads still starting, if any. */
  let booting: Prepared | null = null;
  const ahead = (p: Prepared | null) => {
    prepared = booting = p;
    void p?.booted.then(() => booting === p && (booting = null));
  };
  ahead(opts.memoryBytes ? prepare(opts.memoryBytes) : null);
  let closed = false;
  let busy = false;
  /** An attempt runs, or is being cleaned up. */
  let running = false;
  /** While a failed attempt is cleaned up: its end, which a new peer waits for. */
  let finishing: Promise<void> | null = null;
  let resolveGuest!: (g: Guest) => void;
  let rejectGuest!: (e: Error) => void;
  const guest = new Promise<Guest>((res, rej) => ((resolveGuest = res), (rejectGuest = rej)));
  guest.catch(() => {});
  const start = (link: Link) => {
    busy = running = true;
    const ready = prepared;
    prepared = null;
    const s = new DestinationSession(link.channel, opts, ready, (st) => (state = st), log, link.key);
    let finished!: () => void;
    const cleanedUp = new Promise<void>((r) => (finished = r));
    incoming(s, () => (finishing = cleanedUp)).then(
      (g) => {
        server.close();
        resolveGuest(g);
        // The guest is handed over first; the attempt is over once its hashing threads have stopped.
        void s.hasher?.close().catch(() => {}).finally(() => (running = false));
      },
      () => {
        state = 'failed';
        busy = running = false;
        // Refused before it took the prepared memory: nothing was written, keep it. Else the next attempt starts clean.
        // Closed meanwhile: the untaken threads stop too (left running, they would keep the process alive).
        if (ready && !s.memory && closed) release(ready);
        else if (ready && !s.memory) ahead(ready);
        else if (opts.memoryBytes && !closed) ahead(prepare(opts.memoryBytes));
        finishing = null;
        finished();
      },
    );
  };
  const server = await listenLinks(
    { address: addressOf(opts), security: opts.security ?? null, insecure: opts.insecure, handshakeTimeoutMs: opts.helloTimeoutMs ?? TIMEOUT.HELLO },
    {
      busy: () => busy || closed,
      finishing: () => (closed ? null : finishing),
      refuseBusy: (c) => c.send({ name: 'ERROR', body: { code: 'MIGRATE_DESTINATION_BUSY', message: 'this destination is already receiving a guest' } }).finally(() => c.close()),
      accepted: start,
      dropped: (e) => log.warn({ code: e.code, message: e.message }, 'peer dropped before HELLO'),
    },
  );
  return {
    port: server.address.transport === 'tcp' ? server.address.port : 0,
    address: formatLinkAddress(server.address),
    state: () => state,
    guest,
    idle: () => !running && booting === null,
    close: () => {
      closed = true;
      server.close();
      if (prepared) release(prepared);
      rejectGuest(new LivemigError('MIGRATE_CANCELLED', 'the destination stopped waiting'));
    },
  };
}
