/**
 * The destination proxy waits for one source proxy (as QEMU's `-incoming` waits for
 * one migration); a second connection meanwhile is told MIGRATE_DESTINATION_BUSY.
 */
import { Channel } from '../../wire/index.ts';
import { deferred } from '../deferred.ts';
import { boundEndpoint, listenOn } from '../endpoint.ts';
import type { DestinationProxySession } from './session.ts';
import { cpuMs } from '../progress.ts';

export async function acceptSource(s: DestinationProxySession): Promise<void> {
  const first = deferred<void>();
  s.server = await listenOn(s.opts.listen, (socket) => {
    const channel = new Channel(socket);
    if (!s.channel) {
      s.channel = channel;
      s.tConnected = performance.now();
      s.cpuConnected = cpuMs();
      return first.resolve();
    }
    void channel.send({ name: 'ERROR', body: { code: 'MIGRATE_DESTINATION_BUSY', message: 'this destination proxy is already receiving a migration' } }).catch(() => {}).finally(() => channel.close());
  });
  s.opts.onListening?.(boundEndpoint(s.server, s.opts.listen));
  await Promise.race([first.promise, s.failed.promise]);
  s.log.info('source proxy connected');
}
