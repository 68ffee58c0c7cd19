/**
 * A real TLS client with the wrong credentials (credentials.ts) against a
 * destination that has credentials. Under TLS 1.3 a client finishes its side of
 * the handshake before the server has checked the client's certificate, so the
 * intruder then sends a frame, as a source would: a destination that let it in
 * would answer (WELCOME or ERROR); it must send nothing but its refusal and close.
 * Also captures a client's ClientHello, for the byte-level sessions to replay and mutate.
 */
import net from 'node:net';
import tls, { type ConnectionOptions } from 'node:tls';
import { once } from 'node:events';
import type { SessionOutcome } from './connection.ts';

export interface IntruderOutcome extends SessionOutcome {
  /** The client's side of the handshake completed (TLS 1.3 with a certificate the server has yet to check). */
  clientHandshake: boolean;
  /** Application bytes the destination sent back: a destination that let the intruder in. */
  answered: number;
  /** How the client saw it end (its TLS error code, or none). */
  error: string | null;
}

/** Connects, runs the client's handshake with `options`, sends `probe` if the client's side completes, and waits for the close. */
export function runIntruder(port: number, host: string, options: ConnectionOptions, probe: Buffer, boundMs: number): Promise<IntruderOutcome> {
  return new Promise((resolve) => {
    const out: IntruderOutcome = { closed: false, closeMs: 0, nudged: 'none', bytesOut: 0, bytesIn: 0, clientHandshake: false, answered: 0, error: null };
    const raw = net.connect(port, host);
    const t0 = performance.now();
    let hung = false;
    const timer = setTimeout(() => ((hung = true), raw.destroy()), boundMs);
    raw.on('error', (e: NodeJS.ErrnoException) => {
      if (!raw.bytesWritten) out.connectError = e.code ?? e.message;
    });
    raw.once('connect', () => {
      const secure = tls.connect({ ...options, socket: raw });
      secure.on('error', (e: NodeJS.ErrnoException) => (out.error ??= e.code ?? e.message));
      secure.once('secureConnect', () => {
        out.clientHandshake = true;
        secure.write(probe);
      });
      secure.on('data', (d: Buffer) => (out.answered += d.length));
      secure.once('close', () => raw.destroy());
    });
    raw.once('close', () => {
      clearTimeout(timer);
      out.closed = !hung;
      out.closeMs = Math.round(performance.now() - t0);
      out.bytesOut = raw.bytesWritten;
      out.bytesIn = raw.bytesRead;
      resolve(out);
    });
  });
}

/** The first TLS record a client with `options` sends (its ClientHello), caught by a listener that never answers. */
export async function captureClientHello(options: ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const caught = new Promise<Buffer>((resolve) => {
    server.once('connection', (s) => {
      let got = Buffer.alloc(0);
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d]);
        if (got.length >= 5 && got.length >= 5 + got.readUInt16BE(3)) {
          resolve(got.subarray(0, 5 + got.readUInt16BE(3)));
          s.destroy();
        }
      });
    });
  });
  const client = tls.connect({ ...options, port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
  client.on('error', () => {});
  try {
    return await caught;
  } finally {
    client.destroy();
    server.close();
  }
}
