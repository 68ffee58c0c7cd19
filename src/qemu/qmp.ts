/**
 * A QMP client: QEMU's JSON monitor over a Unix socket. connect() reads the greeting
 * and leaves capabilities negotiation with `qmp_capabilities`; execute() sends one
 * command with an id and resolves with its `return`, or rejects with a QmpError that
 * carries QEMU's error class. Asynchronous events are kept in order, numbered, so a
 * caller can wait for an event that may already have arrived (take `eventCount`
 * before the command that causes it, pass it as `since`).
 */
import net from 'node:net';
import { once } from 'node:events';
import { LivemigError } from '../errors.ts';

export type QmpErrorCode =
  | 'QMP_CONNECT' // the socket did not accept or greet in time
  | 'QMP_PROTOCOL' // the peer does not speak QMP (bad greeting, bad JSON)
  | 'QMP_COMMAND' // QEMU answered the command with an error
  | 'QMP_CLOSED' // the connection ended with commands or waits pending
  | 'QMP_TIMEOUT'; // an awaited event did not come in time

export class QmpError extends LivemigError {
  constructor(
    code: QmpErrorCode,
    message: string,
    /** QEMU's error class for QMP_COMMAND, e.g. CommandNotFound, GenericError. */
    readonly errorClass?: string,
  ) {
    super(code, message);
    this.name = 'QmpError';
  }
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
  /** Position in this connection's event sequence (0 for the first). */
  seq: number;
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Waiter {
  name: string;
  match: (e: QmpEvent) => boolean;
  resolve: (e: QmpEvent) => void;
  reject: (e: Error) => void;
}

/** Events kept for late waiters; older ones are dropped (QEMU emits few per second). */
const EVENT_BACKLOG = 1024;
const MAX_LINE = 16 << 20;

export class QmpClient {
  private readonly pending = new Map<number, Pending>();
  private readonly waiters = new Set<Waiter>();
  private readonly events: QmpEvent[] = [];
  private nextId = 1;
  private buffered = '';
  private closedError: QmpError | null = null;
  /** Number of events received so far: the `since` for an event a later command causes. */
  eventCount = 0;

  private constructor(private readonly socket: net.Socket, readonly version: { qemu: { major: number; minor: number; micro: number } }) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('close', () => this.fail(new QmpError('QMP_CLOSED', 'QMP connection closed')));
    socket.on('error', () => {}); // 'close' follows and fails what is pending
    socket.resume(); // readGreeting paused it, with anything after the greeting put back
  }

  /** Connects to a QMP socket, reads the greeting, negotiates capabilities. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const socket = net.connect(path);
    const timer = setTimeout(() => socket.destroy(new QmpError('QMP_CONNECT', `no QMP greeting on ${path} within ${timeoutMs} ms`)), timeoutMs);
    try {
      await once(socket, 'connect');
      const greeting = await readGreeting(socket);
      const client = new QmpClient(socket, greeting.QMP.version);
      await client.execute('qmp_capabilities');
      return client;
    } catch (err) {
      socket.destroy();
      if (err instanceof QmpError) throw err;
      throw new QmpError('QMP_CONNECT', `cannot connect to QMP at ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  /** Resolves with the first event `name` (matching `match`) numbered `since` or later. */
  waitEvent(name: string, opts: { since?: number; timeoutMs?: number; match?: (e: QmpEvent) => boolean } = {}): Promise<QmpEvent> {
    const match = (e: QmpEvent) => e.event === name && e.seq >= (opts.since ?? this.eventCount) && (opts.match?.(e) ?? true);
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen);
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const timeoutMs = opts.timeoutMs ?? 60_000;
      const timer = setTimeout(() => (this.waiters.delete(waiter), reject(new QmpError('QMP_TIMEOUT', `no QMP event ${name} within ${timeoutMs} ms`))), timeoutMs);
      const waiter: Waiter = {
        name, match,
        resolve: (e) => (clearTimeout(timer), resolve(e)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.waiters.add(waiter);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    this.buffered += d.toString('utf8');
    if (this.buffered.length > MAX_LINE) return void this.socket.destroy(new QmpError('QMP_PROTOCOL', 'QMP line longer than 16 MiB'));
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line);
    } catch {
      return void this.socket.destroy(new QmpError('QMP_PROTOCOL', `not JSON from QMP: ${line.slice(0, 80)}`));
    }
    if (typeof msg.event === 'string') return this.onEvent(msg);
    const pending = this.pending.get(msg.id as number);
    if (!pending) return; // an answer to nobody: ignore, as QEMU's own tools do
    this.pending.delete(msg.id as number);
    const error = msg.error as { class?: string; desc?: string } | undefined;
    if (error) pending.reject(new QmpError('QMP_COMMAND', `${pending.command}: ${error.desc ?? 'error'}`, error.class));
    else pending.resolve(msg.return);
  }

  private onEvent(msg: Record<string, unknown>): void {
    const e: QmpEvent = { event: msg.event as string, data: (msg.data ?? {}) as Record<string, unknown>, timestamp: msg.timestamp as QmpEvent['timestamp'], seq: this.eventCount++ };
    this.events.push(e);
    if (this.events.length > EVENT_BACKLOG) this.events.shift();
    for (const w of this.waiters) if (w.match(e)) this.waiters.delete(w), w.resolve(e);
  }

  private fail(err: QmpError): void {
    this.closedError ??= err;
    for (const p of this.pending.values()) p.reject(new QmpError('QMP_CLOSED', `${p.command}: QMP connection closed before the answer`));
    this.pending.clear();
    for (const w of this.waiters) w.reject(new QmpError('QMP_CLOSED', `QMP connection closed while waiting for ${w.name}`));
    this.waiters.clear();
  }
}

/** Reads the first line; what follows it is put back for the client (for-await would destroy the socket). */
function readGreeting(socket: net.Socket): Promise<{ QMP: { version: QmpClient['version'] } }> {
  return new Promise((resolve, reject) => {
    let text = '';
    const done = (err: Error | null, value?: { QMP: { version: QmpClient['version'] } }) => {
      socket.off('data', onData).off('error', onEnd).off('close', onEnd);
      socket.pause();
      if (err) reject(err);
      else resolve(value!);
    };
    const onEnd = (err?: Error) => done(err instanceof Error ? err : new QmpError('QMP_PROTOCOL', `QMP socket closed before the greeting: ${text.slice(0, 80)}`));
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const nl = text.indexOf('\n');
      if (nl < 0) return text.length > 64 << 10 ? done(new QmpError('QMP_PROTOCOL', 'no QMP greeting in the first 64 KiB')) : undefined;
      if (nl + 1 < text.length) socket.unshift(Buffer.from(text.slice(nl + 1)));
      let greeting: { QMP?: { version: QmpClient['version'] } } = {};
      try {
        greeting = JSON.parse(text.slice(0, nl));
      } catch {}
      if (!greeting.QMP) done(new QmpError('QMP_PROTOCOL', `not a QMP greeting: ${text.slice(0, 80)}`));
      else done(null, greeting as { QMP: { version: QmpClient['version'] } });
    };
    socket.on('data', onData).on('error', onEnd).on('close', onEnd);
  });
}
