/**
 * A guest's serial console on QEMU's Unix socket chardev: send a line, wait (bounded)
 * for text to appear after it. Output is kept as a bounded tail with absolute
 * positions, so a wait only matches what came after the line that asked for it.
 */
import net from 'node:net';
import { once } from 'node:events';
import { randomInt } from 'node:crypto';
import { LivemigError } from '../errors.ts';

export class SerialTimeoutError extends LivemigError {
  constructor(message: string) {
    super('SERIAL_TIMEOUT', message);
    this.name = 'SerialTimeoutError';
  }
}

const KEEP = 256 << 10;

interface Waiter {
  from: number;
  pattern: RegExp;
  resolve: (m: RegExpExecArray) => void;
}

export class SerialConsole {
  private tail = '';
  private tailStart = 0; // absolute position of tail[0]
  private readonly waiters = new Set<Waiter>();
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => this.onData(d));
    socket.on('error', () => {});
    socket.on('close', () => (this.closed = true));
  }

  static async connect(path: string): Promise<SerialConsole> {
    const socket = net.connect(path);
    await once(socket, 'connect');
    return new SerialConsole(socket);
  }

  /** Absolute position of the end of the output so far. */
  get position(): number {
    return this.tailStart + this.tail.length;
  }

  /** The most recent output (at most 256 KiB), for error messages and logs. */
  get output(): string {
    return this.tail;
  }

  send(line: string): void {
    this.socket.write(line + '\n');
  }

  /** Resolves when `pattern` appears in the output at or after `from` (default: now). */
  waitFor(pattern: RegExp | string, timeoutMs: number, from = this.position): Promise<RegExpExecArray> {
    const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
    const found = this.search(re, from);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        const last = this.tail.slice(-300).replace(/\s+/g, ' ');
        reject(new SerialTimeoutError(`no ${re} on the serial console within ${timeoutMs} ms${this.closed ? ' (console closed)' : ''}; last output: ${last}`));
      }, timeoutMs);
      const waiter: Waiter = { from, pattern: re, resolve: (m) => (clearTimeout(timer), resolve(m)) };
      this.waiters.add(waiter);
    });
  }

  /** Sends `line` and waits for `answer` in what follows it. */
  ask(line: string, answer: RegExp | string, timeoutMs: number): Promise<RegExpExecArray> {
    const from = this.position;
    this.send(line);
    return this.waitFor(answer, timeoutMs, from);
  }

  /**
   * Asks a shell for arithmetic only it can do (echo alive-$((a+b))), so the tty's
   * echo of the question never passes for the answer. A guest still booting loses
   * what it is sent (the emulated UART drops bytes before its driver is up), so the
   * question is asked again every `retryMs` until `timeoutMs`.
   */
  async askAlive(timeoutMs: number, retryMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const a = randomInt(1_000_000);
      const b = randomInt(1_000_000);
      const left = deadline - Date.now();
      try {
        return void (await this.ask(`echo alive-$((${a}+${b}))`, `alive-${a + b}`, Math.max(1, Math.min(retryMs, left))));
      } catch (err) {
        if (!(err instanceof SerialTimeoutError) || Date.now() >= deadline) throw err;
      }
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(d: string): void {
    this.tail += d;
    if (this.tail.length > KEEP) {
      const drop = this.tail.length - KEEP / 2;
      this.tail = this.tail.slice(drop);
      this.tailStart += drop;
    }
    for (const w of this.waiters) {
      const m = this.search(w.pattern, w.from);
      if (m) this.waiters.delete(w), w.resolve(m);
    }
  }

  private search(re: RegExp, from: number): RegExpExecArray | null {
    return re.exec(this.tail.slice(Math.max(0, from - this.tailStart)));
  }
}
