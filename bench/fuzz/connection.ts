/**
 * One fuzz session on one real TCP connection: the bytes go out as fast as the
 * target takes them, the write side is half-closed, and the target must close
 * the connection within a bound after it has received everything. What it
 * sends back goes to a reader (a reply parser) as it arrives.
 */
import net from 'node:net';
import { SocketReader } from '../../nbd/socket-reader.ts';

export interface SessionOutcome {
  /** The target closed the connection within the bound. */
  closed: boolean;
  /** Milliseconds from the last byte handed to the kernel to the target's close. */
  closeMs: number;
  bytesOut: number;
  bytesIn: number;
  connectError?: string;
}

/** Reads the target's side of the session; resolves when it gives up or the connection ends. */
export type ReplyReader = (reader: SocketReader) => Promise<void>;

export function runSession(port: number, host: string, bytes: Buffer[], boundMs: number, readReplies: ReplyReader): Promise<SessionOutcome> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    const outcome: SessionOutcome = { closed: false, closeMs: 0, bytesOut: 0, bytesIn: 0 };
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    let flushedAt = 0;
    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (!flushedAt && !outcome.bytesOut) outcome.connectError = e.code ?? e.message;
    });
    socket.on('data', (d) => (outcome.bytesIn += d.length));
    socket.once('connect', () => {
      const reader = new SocketReader(socket, 1 << 20);
      // A parser that loses its way stops; the rest is read and dropped so the target never blocks on us.
      void readReplies(reader).catch(() => {}).finally(() => {
        reader.detach();
        socket.resume();
      });
      for (const b of bytes) {
        socket.write(b);
        outcome.bytesOut += b.length;
      }
      socket.end(() => {
        flushedAt = performance.now();
        timer = setTimeout(() => ((timedOut = true), socket.destroy()), boundMs);
      });
    });
    socket.once('close', () => {
      clearTimeout(timer);
      outcome.closed = !timedOut;
      outcome.closeMs = flushedAt ? Math.round(performance.now() - flushedAt) : 0;
      resolve(outcome);
    });
  });
}
