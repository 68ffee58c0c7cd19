/**
 * The source's end of a migration link: connect (TCP or a Unix socket), then, with
 * credentials, TLS before any livemig byte. A destination that refuses our
 * credentials, or does not speak TLS, fails here with MIGRATE_TLS.
 */
import net from 'node:net';
import { once } from 'node:events';
import { startClientTls } from '../../../nbd/index.ts';
import { LivemigError } from '../../errors.ts';
import { Channel } from '../channel.ts';
import { TIMEOUT } from '../protocol.ts';
import { formatLinkAddress, type LinkAddress } from './address.ts';
import { sessionKey, type LinkSecurity } from './security.ts';

/** An established link: its channel, and the session's key (null on a plain link: the source makes one). */
export interface Link {
  channel: Channel;
  key: Buffer | null;
}

async function connectRaw(address: LinkAddress, timeoutMs: number): Promise<net.Socket> {
  const socket = address.transport === 'unix' ? net.connect(address.path) : net.connect(address.port, address.host);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      once(socket, 'connect'),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs))),
    ]);
    return socket;
  } catch (err) {
    socket.destroy();
    const e = err as NodeJS.ErrnoException;
    throw new LivemigError('MIGRATE_CONNECT_FAILED', `cannot reach the destination ${formatLinkAddress(address)}: ${e.code ?? e.message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** TLS on the connected socket, bounded in time: a destination that never answers the handshake is not waited on forever. */
async function secure(raw: net.Socket, address: LinkAddress, security: LinkSecurity, timeoutMs: number): Promise<Link> {
  const where = formatLinkAddress(address);
  const timer = setTimeout(() => raw.destroy(new Error(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
  try {
    const servername = address.transport === 'tcp' ? address.host : undefined;
    const tls = await startClientTls(raw, { credentials: security.credentials, servername }, `the destination ${where}`);
    return { channel: new Channel(tls, raw), key: sessionKey(tls) };
  } catch (err) {
    raw.destroy();
    throw new LivemigError('MIGRATE_TLS', (err as Error).message, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

export async function connectLink(address: LinkAddress, security: LinkSecurity | null, timeoutMs: number = TIMEOUT.CONNECT): Promise<Link> {
  const raw = await connectRaw(address, timeoutMs);
  raw.setNoDelay(true);
  if (!security) return { channel: new Channel(raw), key: null };
  return secure(raw, address, security, timeoutMs);
}
