/** Serves a guest's control socket: one JSON request per line, one reply per line. */
import net from 'node:net';
import { rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Guest } from '../guest.ts';
import { CONTROL_COMMANDS, type ControlReply, type ControlRequest } from './protocol.ts';

export interface ControlHandlers {
  /** Called after a `stop` was answered: the owner shuts the process down. */
  onStop: () => void;
}

export async function serveControl(path: string, guest: Guest, handlers: ControlHandlers): Promise<net.Server> {
  rmSync(path, { force: true });
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    const lines = createInterface({ input: socket });
    lines.on('line', async (line) => {
      let req: ControlRequest;
      try {
        req = JSON.parse(line);
      } catch {
        return reply(socket, { id: 0, ok: false, error: { code: 'CONTROL_BAD_REQUEST', message: 'request is not JSON' } });
      }
      try {
        const result = await dispatch(guest, req);
        reply(socket, { id: req.id, ok: true, result });
        if (req.cmd === 'stop') handlers.onStop();
      } catch (err) {
        const e = err as Error & { code?: string };
        reply(socket, { id: req.id, ok: false, error: { code: e.code ?? 'CONTROL_FAILED', message: e.message } });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return server;
}

function reply(socket: net.Socket, r: ControlReply): void {
  if (!socket.destroyed) socket.write(JSON.stringify(r) + '\n');
}

async function dispatch(guest: Guest, req: ControlRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'status':
      return guest.status();
    case 'pause':
      return guest.pause();
    case 'resume':
      return guest.resume();
    case 'throttle':
      if (typeof req.percent !== 'number' || !(req.percent >= 0 && req.percent <= 99)) {
        throw Object.assign(new Error('throttle needs percent between 0 and 99'), { code: 'CONTROL_BAD_REQUEST' });
      }
      return guest.throttle(req.percent);
    case 'dump-memory':
      if (typeof req.path !== 'string' || !req.path) throw Object.assign(new Error('dump-memory needs a path'), { code: 'CONTROL_BAD_REQUEST' });
      return guest.dumpMemory(req.path);
    case 'stop':
      await guest.stop();
      return { stopped: true };
    default:
      throw Object.assign(new Error(`unknown command ${JSON.stringify((req as { cmd: unknown }).cmd)} (have: ${CONTROL_COMMANDS.join(', ')})`), {
        code: 'CONTROL_BAD_REQUEST',
      });
  }
}
