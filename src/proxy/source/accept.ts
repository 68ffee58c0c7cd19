/**
 * The source proxy waits for QEMU's migration connection (as `-incoming` would), and
 * keeps listening: a second connection is QEMU opening multifd channels (or something
 * else that is no main stream), which fails the migration with the parser's reason.
 */
import type net from 'node:net';
import { LivemigError } from '../../errors.ts';
import { QemuStreamParser } from '../../qemu/stream/index.ts';
import { deferred } from '../deferred.ts';
import { boundEndpoint, listenOn } from '../endpoint.ts';
import type { SourceProxySession } from './session.ts';
import { cpuMs } from '../progress.ts';

function refuseExtra(s: SourceProxySession, socket: net.Socket): void {
  socket.on('error', () => {});
  socket.once('data', (chunk: Buffer) => {
    socket.destroy();
    try {
      new QemuStreamParser().push(chunk, () => {});
      s.fail(new LivemigError('QEMU_STREAM_UNSUPPORTED', 'QEMU opened a second migration connection: only one main stream is supported (no multifd)'));
    } catch (err) {
      s.fail(err);
    }
  });
}

export async function acceptQemu(s: SourceProxySession): Promise<void> {
  const first = deferred<void>();
  s.server = await listenOn(s.opts.from, (socket) => {
    if (s.qemu) return refuseExtra(s, socket);
    s.qemu = socket;
    s.tConnected = performance.now();
    s.cpuConnected = cpuMs();
    first.resolve();
  });
  s.opts.onListening?.(boundEndpoint(s.server, s.opts.from));
  await Promise.race([first.promise, s.failed.promise]);
  s.log.info('QEMU connected');
}
