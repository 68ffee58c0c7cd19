/**
 * The destination's end of migration links. With credentials, TLS is established
 * on the raw socket before any livemig byte is read: a peer without the right
 * certificate or key is dropped before HELLO. Unauthenticated peers cost little
 * and are few: at most MAX_PENDING of them at once (the rest are closed on
 * arrival), each bounded in time, behind a short accept backlog. While a
 * migration runs, a new peer is told MIGRATE_DESTINATION_BUSY on a plain link
 * and simply closed under TLS (it has not proved who it is); one arriving while a
 * failed attempt is cleaned up waits for that instead.
 */
import net from 'node:net';
import { once } from 'node:events';
import { startServerTls } from '../../../nbd/index.ts';
import { LivemigError } from '../../errors.ts';
import { Channel } from '../channel.ts';
import { formatLinkAddress, isLocalOnly, type LinkAddress } from './address.ts';
import { sessionKey, type LinkSecurity } from './security.ts';
import type { Link } from './connect.ts';

/** Peers accepted but not yet a session (in their TLS handshake, or being told "busy"). */
export const MAX_PENDING = 8;
/** The kernel's queue of connections not yet accepted. */
export const LISTEN_BACKLOG = 16;

export interface LinkListenOptions {
  address: LinkAddress;
  security: LinkSecurity | null;
  /** Allow a plain link on an address other hosts can reach. */
  insecure?: boolean;
  /** How long a peer may take for its TLS handshake before it is dropped. */
  handshakeTimeoutMs: number;
  maxPending?: number;
}

export interface LinkHandlers {
  /** Whether this side is taken (a migration runs): new peers are turned away. */
  busy: () => boolean;
  /** While a failed attempt is being cleaned up, its end: a new peer waits for it (bounded) rather than be turned away. */
  finishing?: () => Promise<void> | null;
  /** Tells a plain peer that arrived while busy; resolves once it is done with it. */
  refuseBusy: (channel: Channel) => Promise<void>;
  /** A peer that may start a migration (authenticated, under TLS). */
  accepted: (link: Link) => void;
  /** A peer dropped in its TLS handshake (MIGRATE_TLS), before any livemig byte was read: for the log. */
  dropped?: (err: LivemigError) => void;
}

export interface LinkServer {
  /** The address as bound (port 0 replaced by the port taken). */
  address: LinkAddress;
  close: () => void;
}

/** Refuses to listen in clear where other hosts can reach, unless told it may. */
export function checkExposure(o: LinkListenOptions): void {
  if (o.security || o.insecure || isLocalOnly(o.address)) return;
  throw new LivemigError('MIGRATE_INSECURE', `refusing to wait for a guest on ${formatLinkAddress(o.address)} without TLS: anyone who reaches it could send a guest; give --tls-creds DIR or --tls-psk FILE, listen on 127.0.0.1 or unix:PATH, or say --insecure`);
}

export async function listenLinks(o: LinkListenOptions, h: LinkHandlers): Promise<LinkServer> {
  checkExposure(o);
  const maxPending = o.maxPending ?? MAX_PENDING;
  let pending = 0;
  const hold = (work: Promise<unknown>) => {
    pending++;
    void work.catch(() => {}).finally(() => pending--);
  };
  const server = net.createServer((raw) => {
    raw.on('error', () => {});
    raw.setNoDelay(true);
    if (pending >= maxPending || (o.security && h.busy() && !h.finishing?.())) return void raw.destroy();
    if (o.security) return hold(secure(raw, o, h));
    if (h.finishing?.()) return hold(afterCleanup(h, o.handshakeTimeoutMs).then(() => admitPlain(raw, h)));
    return void admitPlain(raw, h);
  });
  const a = o.address;
  server.listen(a.transport === 'unix' ? { path: a.path, backlog: LISTEN_BACKLOG } : { host: a.host, port: a.port, backlog: LISTEN_BACKLOG });
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => {
    throw new LivemigError('MIGRATE_CONNECT_FAILED', `cannot listen on ${formatLinkAddress(a)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  })]);
  const bound: LinkAddress = a.transport === 'unix' ? a : { ...a, port: (server.address() as net.AddressInfo).port };
  return { address: bound, close: () => server.close() };
}

/** Waits for the cleanup of a failed attempt, if one runs, for at most ms. */
async function afterCleanup(h: LinkHandlers, ms: number): Promise<void> {
  const finishing = h.finishing?.();
  if (!finishing) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([finishing, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

/** A plain peer: the session, or "busy" while another runs. */
function admitPlain(raw: net.Socket, h: LinkHandlers): Promise<void> | void {
  if (raw.destroyed) return; // it left while it waited
  if (h.busy()) return h.refuseBusy(new Channel(raw));
  h.accepted({ channel: new Channel(raw), key: null });
}

/** The TLS handshake of one peer, bounded in time; only an authenticated peer reaches `accepted`. */
async function secure(raw: net.Socket, o: LinkListenOptions, h: LinkHandlers): Promise<void> {
  const timer = setTimeout(() => raw.destroy(), o.handshakeTimeoutMs);
  try {
    const tls = await startServerTls(raw, o.security!.credentials, 'the source').catch((err: Error) => {
      h.dropped?.(new LivemigError('MIGRATE_TLS', err.message, { cause: err }));
      throw err;
    });
    await afterCleanup(h, o.handshakeTimeoutMs);
    if (h.busy() || tls.destroyed) return void tls.destroy(); // another peer won the race
    h.accepted({ channel: new Channel(tls, raw), key: sessionKey(tls) });
  } finally {
    clearTimeout(timer);
  }
}
