/**
 * A TCP hop between a migration's source and destination that understands the
 * frames going through it (src/wire): a test sees every frame, and may drop one
 * or cut the link at a chosen frame, to make the failures it means to test.
 */
import net from 'node:net';
import { once } from 'node:events';
import { FRAME_BY_TYPE, FRAME_HEADER_BYTES } from '../../src/wire/index.ts';

export type Direction = 'toDestination' | 'toSource';
export type Verdict = 'pass' | 'drop' | 'cut';

export interface FrameTap {
  port: number;
  /** Frame names seen so far, per direction, in order (dropped ones included). */
  seen: Record<Direction, string[]>;
  close: () => void;
}

/** Forwards whole frames from `from` to `to`, asking `rule` about each. */
function relay(from: net.Socket, to: net.Socket, dir: Direction, seen: string[], rule: (dir: Direction, name: string, payload: Buffer) => Verdict, cut: () => void): void {
  let buf = Buffer.alloc(0);
  from.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= FRAME_HEADER_BYTES) {
      const length = buf.readUInt32BE(4);
      if (buf.length < FRAME_HEADER_BYTES + length) break;
      const frame = buf.subarray(0, FRAME_HEADER_BYTES + length);
      buf = buf.subarray(FRAME_HEADER_BYTES + length);
      const name = FRAME_BY_TYPE.get(frame.readUInt16BE(0))?.name ?? `type ${frame.readUInt16BE(0)}`;
      seen.push(name);
      const verdict = rule(dir, name, frame.subarray(FRAME_HEADER_BYTES));
      if (verdict === 'cut') return cut();
      if (verdict === 'pass') to.write(frame);
    }
  });
  from.on('end', () => to.end());
}

export async function startFrameTap(targetPort: number, rule: (dir: Direction, name: string, payload: Buffer) => Verdict = () => 'pass'): Promise<FrameTap> {
  const seen: Record<Direction, string[]> = { toDestination: [], toSource: [] };
  const sockets: net.Socket[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.push(client, upstream);
    const cut = () => (client.destroy(), upstream.destroy());
    for (const s of [client, upstream]) s.on('error', cut);
    relay(client, upstream, 'toDestination', seen.toDestination, rule, cut);
    relay(upstream, client, 'toSource', seen.toSource, rule, cut);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}
