/**
 * The destination proxy waits for one source proxy (as QEMU's `-incoming` waits for
 * one migration) through the migration engine's listener: with credentials, TLS
 * before any livemig byte (a peer without the right ones is dropped before HELLO);
 * without, loopback or a Unix socket only unless insecure. A second peer meanwhile
 * is told MIGRATE_DESTINATION_BUSY (a plain link) or closed (TLS).
 */
import { LivemigError } from '../../errors.ts';
import { TIMEOUT, listenLinks, type Link } from '../../wire/index.ts';
import { deferred } from '../deferred.ts';
import { clearStaleSocket } from '../endpoint.ts';
import type { DestinationProxySession } from './session.ts';
import { cpuMs } from '../progress.ts';

export async function acceptSource(s: DestinationProxySession): Promise<void> {
  const first = deferred<void>();
  const accepted = (link: Link) => {
    s.channel = link.channel;
    s.linkKey = link.key;
    s.tConnected = performance.now();
    s.cpuConnected = cpuMs();
    first.resolve();
  };
  await clearStaleSocket(s.opts.listen);
  s.server = await listenLinks(
    { address: s.opts.listen, security: s.opts.security, insecure: s.opts.insecure, handshakeTimeoutMs: TIMEOUT.HELLO },
    {
      busy: () => s.channel !== null || s.failure !== null,
      refuseBusy: (c) => c.send({ name: 'ERROR', body: { code: 'MIGRATE_DESTINATION_BUSY', message: 'this destination proxy is already receiving a migration' } }).catch(() => {}).finally(() => c.close()),
      accepted,
    },
  ).catch((e: Error) => {
    throw e instanceof LivemigError && e.code === 'MIGRATE_CONNECT_FAILED' ? new LivemigError('QEMU_PROXY_LISTEN', e.message) : e;
  });
  s.opts.onListening?.(s.server.address);
  await Promise.race([first.promise, s.failed.promise]);
  s.log.info({ tls: s.linkKey !== null }, 'source proxy connected');
}
