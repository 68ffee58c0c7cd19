/**
 * Where a proxy meets QEMU or its peer: `unix:PATH` or `tcp://HOST:PORT`, as QEMU's
 * `migrate` and `-incoming` name them (QEMU itself writes tcp:HOST:PORT). Listening
 * refuses an address in use, except a stale Unix socket file nobody listens on.
 */
import net from 'node:net';
import { once } from 'node:events';
import { lstatSync, unlinkSync } from 'node:fs';
import { parseListenAddress, type ListenAddress } from '../../nbd/index.ts';
import { LivemigError, type ErrorCode } from '../errors.ts';

export type Endpoint = ListenAddress;

export function parseEndpoint(s: string): Endpoint {
  return parseListenAddress(s.replace(/^tcp:(?!\/\/)/, 'tcp://'));
}

export function formatEndpoint(e: Endpoint): string {
  return e.transport === 'unix' ? `unix:${e.path}` : `tcp://${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
}

/** True if something accepts connections on the Unix socket `path`. */
function inUse(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

/** Removes a Unix socket file nobody listens on (left by a proxy that was killed). */
export async function clearStaleSocket(e: Endpoint): Promise<void> {
  if (e.transport === 'unix' && lstatSync(e.path, { throwIfNoEntry: false })?.isSocket() && !(await inUse(e.path))) unlinkSync(e.path);
}

export async function listenOn(e: Endpoint, onConnection: (socket: net.Socket) => void): Promise<net.Server> {
  await clearStaleSocket(e);
  const server = net.createServer({ noDelay: true }, onConnection);
  server.listen(e.transport === 'unix' ? { path: e.path } : { port: e.port, host: e.host });
  try {
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err))]);
  } catch (err) {
    throw new LivemigError('QEMU_PROXY_LISTEN', `cannot listen on ${formatEndpoint(e)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return server;
}

/** The address a server listens on (a TCP port of 0 resolved). */
export function boundEndpoint(server: net.Server, e: Endpoint): Endpoint {
  const a = server.address();
  return e.transport === 'tcp' && a && typeof a === 'object' ? { ...e, port: a.port } : e;
}

export async function connectTo(e: Endpoint, timeoutMs: number, code: ErrorCode, what: string): Promise<net.Socket> {
  const socket = e.transport === 'unix' ? net.connect(e.path) : net.connect(e.port, e.host);
  const timer = setTimeout(() => socket.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
  try {
    await Promise.race([once(socket, 'connect'), once(socket, 'error').then(([err]) => Promise.reject(err))]);
  } catch (err) {
    socket.destroy();
    throw new LivemigError(code, `cannot reach ${what} at ${formatEndpoint(e)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  if (e.transport === 'tcp') socket.setNoDelay(true);
  return socket;
}
