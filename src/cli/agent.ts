/**
 * The agent behind `livemig run`: one guest (or a destination waiting for one)
 * and its control socket. It answers status, starts migrations, and stops the
 * process when the guest stops or has migrated away; an agent that stays (`run
 * --incoming --stay`) lets a guest that has migrated away go and waits for the
 * next one instead.
 */
import type { Logger } from 'pino';
import type { Guest } from '../guest/guest.ts';
import type { ControlTarget } from '../guest/control/server.ts';
import type { MigrateArgs } from '../guest/control/protocol.ts';
import { migrate } from '../migrate/source/index.ts';
import type { RoundStats } from '../migrate/result.ts';
import { LivemigError, codeOf } from '../errors.ts';
import { loadLinkSecurity, parseLinkAddress } from '../wire/index.ts';

interface MigrationStatus {
  state: 'active' | 'completed' | 'failed';
  to: string;
  strategy: string;
  rounds: RoundStats[];
  result?: unknown;
  error?: { code: string; message: string };
}

export class Agent implements ControlTarget {
  guestHere: Guest | null = null;
  incoming: { port: number; state: () => string; idle: () => boolean } | null = null;
  private migration: MigrationStatus | null = null;
  /** Work under way between commands (letting a guest go, listening again): the agent is not idle until it ends. */
  private work = new Set<Promise<unknown>>();
  private stopping: Promise<void> | null = null;
  private done!: () => void;
  /** Resolves once the agent has stopped: the process may exit. */
  readonly finished = new Promise<void>((r) => (this.done = r));
  private left: (() => void) | null = null;

  /** stay: a guest that has migrated away is let go, and the agent goes on (it serves a host, not one guest). */
  constructor(private readonly log: Logger, private readonly stay = false) {}

  /** Resolves once the guest here has migrated away and has been let go (an agent that stays). */
  guestGone(): Promise<void> {
    return new Promise((r) => (this.left = r));
  }

  guest(): Guest | null {
    return this.guestHere;
  }

  /** Tracks `p` as work under way; returns it. */
  during<T>(p: Promise<T>): Promise<T> {
    this.work.add(p);
    void p.catch(() => {}).finally(() => this.work.delete(p));
    return p;
  }

  /**
   * Nothing under way: no migration, no guest being let go, no attempt being received
   * or cleaned up, threads booted ahead started. Figures taken now (the soak's) compare.
   */
  idle(): boolean {
    return this.migration?.state !== 'active' && this.work.size === 0 && (this.incoming?.idle() ?? true);
  }

  statusExtra(): Record<string, unknown> {
    const m = this.migration;
    const u = process.memoryUsage();
    return {
      idle: this.idle(),
      // This process's memory, the V8 heap of its main thread apart (workers have their own heaps, counted in rss only).
      process: { rssBytes: u.rss, heapTotalBytes: u.heapTotal, heapUsedBytes: u.heapUsed, externalBytes: u.external },
      ...(this.incoming && !this.guestHere ? { state: 'incoming', incoming: { port: this.incoming.port, phase: this.incoming.state() } } : {}),
      ...(m ? { migration: { ...m, rounds: m.rounds.length, lastRound: m.rounds[m.rounds.length - 1] } } : {}),
    };
  }

  async migrate(m: MigrateArgs): Promise<unknown> {
    if (this.migration?.state === 'active') throw new LivemigError('MIGRATE_IN_PROGRESS', 'a migration of this guest is already running');
    const to = parseLinkAddress(m.to);
    const security = loadLinkSecurity({ tlsCreds: m.tlsCreds, tlsPsk: m.tlsPsk }, 'client');
    const where = to.transport === 'unix' ? { host: '', port: 0, socketPath: to.path } : { host: to.host, port: to.port };
    const current: MigrationStatus = (this.migration = { state: 'active', to: m.to, strategy: m.strategy, rounds: [] });
    try {
      const result = await migrate(this.guestHere!, { ...m, ...where, security, log: this.log, onRound: (r) => current.rounds.push(r) });
      current.state = 'completed';
      current.result = result;
      // The guest runs on the destination now; kept paused here (postmigrate) until 'stop' if asked.
      if (!m.keepPaused) {
        const answered = new Promise((r) => setImmediate(r)); // the migrate request is answered first
        void (this.stay ? this.during(answered.then(() => this.release())) : answered.then(() => this.stop()));
      }
      return result;
    } catch (err) {
      current.state = 'failed';
      current.error = { code: codeOf(err) ?? 'MIGRATE_FAILED', message: (err as Error).message };
      throw err;
    }
  }

  onStop(): void {
    void (this.stay && this.migration?.state === 'completed' ? this.during(this.release()) : this.stop());
  }

  /** Lets a guest that has migrated away go (stopped, its memory freed) and forgets its migration. */
  private async release(): Promise<void> {
    const g = this.guestHere;
    this.guestHere = null;
    this.migration = null;
    await g?.stop().catch(() => {});
    const left = this.left;
    this.left = null;
    left?.();
  }

  stop(): Promise<void> {
    this.stopping ??= (this.guestHere ? this.guestHere.stop() : Promise.resolve()).finally(this.done);
    return this.stopping;
  }
}
