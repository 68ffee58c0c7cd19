/** Sends one request to a guest's control socket and returns its result. */
import net from 'node:net';
import { createInterface } from 'node:readline';
import type { ControlCommand, ControlReply } from './protocol.ts';
import { LivemigError, type ErrorCode } from '../../errors.ts';


export async function controlRequest<T = unknown>(path: string, cmd: ControlCommand, args: Record<string, unknown> = {}, timeoutMs = 120_000): Promise<T> {
  const socket = net.connect(path);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (e: NodeJS.ErrnoException) =>
        reject(new LivemigError('CONTROL_UNREACHABLE', `cannot reach the guest's control socket ${path}: ${e.code ?? e.message}`)),
      );
    });
    socket.write(JSON.stringify({ id: 1, cmd, ...args }) + '\n');
    const lines = createInterface({ input: socket });
    const reply = await new Promise<ControlReply>((resolve, reject) => {
      // readline re-emits socket errors (ECONNRESET when a guest exits mid-request): a rejection, not a crash.
      lines.on('error', (e: NodeJS.ErrnoException) => reject(new LivemigError('CONTROL_CLOSED', `${cmd}: the control socket failed: ${e.code ?? e.message}`)));
      const timer = setTimeout(() => reject(new LivemigError('CONTROL_TIMEOUT', `${cmd}: no answer within ${timeoutMs} ms`)), timeoutMs);
      lines.once('line', (l) => (clearTimeout(timer), resolve(JSON.parse(l))));
      socket.once('close', () => (clearTimeout(timer), reject(new LivemigError('CONTROL_CLOSED', `${cmd}: the guest closed the control socket`))));
    });
    if (!reply.ok) throw new LivemigError(reply.error.code as ErrorCode, reply.error.message);
    return reply.result as T;
  } finally {
    socket.destroy();
  }
}
