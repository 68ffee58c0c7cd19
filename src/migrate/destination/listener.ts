/**
 * A destination waiting for a guest: one migration at a time per listener; a
 * second peer is told MIGRATE_DESTINATION_BUSY and dropped, with nothing
 * allocated for it. A failed attempt leaves the listener ready for another.
 */
import net from 'node:net';
import { once } from 'node:events';
import { pino } from 'pino';
import { Guest } from '../../guest/guest.ts';
import { GuestMemory } from '../../guest/memory.ts';
import { P2bMap } from '../../p2b/map.ts';
import { LivemigError } from '../../errors.ts';
import { Channel } from '../../wire/index.ts';
import { HashPool } from '../hash-pool.ts';
import { DestinationSession, type DestinationState, type IncomingOptions, type Prepared } from './session.ts';
import { handshake } from './handshake.ts';
import { receive } from './receive.ts';
import { drain } from './drain.ts';
import { verify } from './verify.ts';
import { resume } from './resume.ts';
import { abort } from './abort.ts';

export interface Incoming {
  port: number;
  state: () => DestinationState;
  /** Resolves with the guest once a migration has arrived and been verified. */
  guest: Promise<Guest>;
  close: () => void;
}

function prepare(memoryBytes: number): Prepared {
  const memory = GuestMemory.allocate(memoryBytes);
  memory.faultIn();
  return { memory, map: P2bMap.allocate(memory.pages), worker: Guest.spareWorker(), hasher: new HashPool(null, memory.shared()) };
}

/** One incoming migration, phase by phase; any failure aborts it (abort.ts). */
async function incoming(s: DestinationSession): Promise<Guest> {
  try {
    await handshake(s);
    await receive(s);
    await drain(s);
    await verify(s);
    return await resume(s);
  } catch (err) {
    return abort(s, err);
  }
}

export async function listenIncoming(opts: IncomingOptions): Promise<Incoming> {
  const log = (opts.log ?? pino({ level: 'silent' })).child({ side: 'destination' });
  let state: DestinationState = 'listening';
  let prepared = opts.memoryBytes ? prepare(opts.memoryBytes) : null;
  let closed = false;
  let busy = false;
  let resolveGuest!: (g: Guest) => void;
  let rejectGuest!: (e: Error) => void;
  const guest = new Promise<Guest>((res, rej) => ((resolveGuest = res), (rejectGuest = rej)));
  guest.catch(() => {});
  const server = net.createServer((socket) => {
    if (busy) {
      const c = new Channel(socket);
      void c.send({ name: 'ERROR', body: { code: 'MIGRATE_DESTINATION_BUSY', message: 'this destination is already receiving a guest' } }).finally(() => c.close());
      return;
    }
    busy = true;
    const ready = prepared;
    prepared = null; // a failed attempt may have written it: the next one starts clean
    const s = new DestinationSession(new Channel(socket), opts, ready, (st) => (state = st), log);
    incoming(s).then(
      (g) => (server.close(), resolveGuest(g)),
      () => {
        state = 'failed';
        busy = false;
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
      rejectGuest(new LivemigError('MIGRATE_CANCELLED', 'the destination stopped waiting'));
    },
  };
}
