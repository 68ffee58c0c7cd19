/**
 * Serves a control socket: one JSON request per line, one reply per line. The
 * socket exists before the guest does on a destination (`run --incoming`):
 * then `status` tells the incoming state and other commands say the guest is not here yet.
 */
import net from 'node:net';
import { rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Guest } from '../guest.ts';
import { LivemigError, type ErrorCode } from '../../errors.ts';
import { CONTROL_COMMANDS, type ControlReply, type ControlRequest, type MigrateArgs } from './protocol.ts';

export interface ControlTarget {
  guest(): Guest | null;
  /** Extra fields for status: the migration in progress, or the incoming state. */
  statusExtra(): Record<string, unknown>;
  migrate(args: MigrateArgs): Promise<unknown>;
  /** Called after a `stop` was answered: the owner shuts the process down. */
  onStop(): void;
}

const fail = (code: ErrorCode, message: string) => new LivemigError(code, message);

export async function serveControl(path: string, target: ControlTarget): Promise<net.Server> {
  rmSync(path, { force: true });
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    const lines = createInterface({ input: socket });
    lines.on('error', () => {}); // a client that vanishes is its own problem
    lines.on('line', async (line) => {
      let req: ControlRequest;
      try {
        req = JSON.parse(line);
      } catch {
        return reply(socket, { id: 0, ok: false, error: { code: 'CONTROL_BAD_REQUEST', message: 'request is not JSON' } });
      }
      try {
        const result = await dispatch(target, req);
        reply(socket, { id: req.id, ok: true, result });
        if (req.cmd === 'stop') target.onStop();
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

async function dispatch(target: ControlTarget, req: ControlRequest): Promise<unknown> {
  if (!(CONTROL_COMMANDS as readonly string[]).includes(req.cmd)) {
    throw fail('CONTROL_BAD_REQUEST', `unknown command ${JSON.stringify(req.cmd)} (have: ${CONTROL_COMMANDS.join(', ')})`);
  }
  const guest = target.guest();
  if (req.cmd === 'status') return guest ? { ...(await guest.status()), ...target.statusExtra() } : target.statusExtra();
  if (req.cmd === 'stop' && !guest) return { stopped: true };
  if (!guest) throw fail('GUEST_NOT_HERE', 'no guest here yet: this destination is waiting for an incoming migration');
  switch (req.cmd) {
    case 'pause':
      return guest.pause();
    case 'resume':
      return guest.resume();
    case 'throttle':
      if (typeof req.percent !== 'number' || !(req.percent >= 0 && req.percent <= 99)) throw fail('CONTROL_BAD_REQUEST', 'throttle needs percent between 0 and 99');
      return guest.throttle(req.percent);
    case 'dump-memory':
      if (typeof req.path !== 'string' || !req.path) throw fail('CONTROL_BAD_REQUEST', 'dump-memory needs a path');
      return guest.dumpMemory(req.path);
    case 'fingerprint':
      return guest.fingerprint();
    case 'migrate':
      if (!req.migrate) throw fail('CONTROL_BAD_REQUEST', 'migrate needs its arguments');
      return target.migrate(req.migrate);
    case 'stop':
      await guest.stop();
      return { stopped: true };
  }
}
