/**
 * One fuzz session on one real TCP connection. The bytes go out as fast as the
 * target takes them; the write side stays open (a target that sees our FIN stops
 * answering, and would stop reading before it read everything) unless the
 * session ends with a FIN on purpose. The target must then close the connection
 * itself. If it is still waiting for more after `quietMs` (a blow the protocol
 * allows after all, or frames it still expects), it is nudged: first a frame no
 * state allows, then a FIN; a target still open `boundMs` after that hangs.
 */
import net from 'node:net';
import { SocketReader } from '../../nbd/socket-reader.ts';

export interface SessionOutcome {
  /** The target closed the connection before the bound. */
  closed: boolean;
  /** Milliseconds from the session's last byte handed to the kernel to the target's close. */
  closeMs: number;
  /** What it took: nothing, the terminator, or our FIN. */
  nudged: 'none' | 'terminator' | 'fin';
  bytesOut: number;
  bytesIn: number;
  connectError?: string;
}

/** Reads the target's side of the session; resolves or rejects when it gives up or the connection ends. */
export type ReplyReader = (reader: SocketReader) => Promise<void>;

export interface SessionPlan {
  bytes: Buffer[];
  /** Half-close right after the bytes (the session is about a peer that leaves). */
  fin?: boolean;
}

export interface Bounds {
  quietMs: number;
  boundMs: number;
  /** Bytes no state of the target accepts. */
  terminator: Buffer;
}

export function runSession(port: number, host: string, plan: SessionPlan, bounds: Bounds, readReplies: ReplyReader): Promise<SessionOutcome> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    const outcome: SessionOutcome = { closed: false, closeMs: 0, nudged: 'none', bytesOut: 0, bytesIn: 0 };
    let timer: NodeJS.Timeout | undefined;
    let flushedAt = 0;
    let gone = false;
    let hung = false;
    const giveUp = () => ((hung = true), socket.destroy());
    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (!outcome.bytesOut) outcome.connectError = e.code ?? e.message;
    });
    socket.on('data', (d) => (outcome.bytesIn += d.length));
    const later = (ms: number, fn: () => void) => (timer = setTimeout(() => !gone && fn(), ms));
    const nudge = () => {
      if (outcome.nudged === 'none') {
        outcome.nudged = 'terminator';
        socket.write(bounds.terminator);
        later(bounds.quietMs, nudge);
      } else if (outcome.nudged === 'terminator') {
        outcome.nudged = 'fin';
        socket.end();
        later(bounds.boundMs, giveUp);
      }
    };
    socket.once('connect', () => {
      const reader = new SocketReader(socket, 1 << 20);
      // A follower that loses its way stops; the rest is read and dropped so the target never blocks on us.
      void readReplies(reader).catch(() => {}).finally(() => {
        reader.detach();
        socket.resume();
      });
      for (const b of plan.bytes) {
        socket.write(b);
        outcome.bytesOut += b.length;
      }
      const flushed = () => {
        flushedAt = performance.now();
        if (plan.fin) later(bounds.boundMs, giveUp);
        else later(bounds.quietMs, nudge);
      };
      if (plan.fin) socket.end(flushed);
      else socket.write(Buffer.alloc(0), flushed);
    });
    socket.once('close', () => {
      gone = true;
      clearTimeout(timer);
      outcome.closeMs = flushedAt ? Math.round(performance.now() - flushedAt) : 0;
      outcome.closed = !hung;
      resolve(outcome);
    });
  });
}
