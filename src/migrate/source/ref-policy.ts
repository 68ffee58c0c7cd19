/**
 * The `auto` strategy's choice: which mapped pages go as block references and
 * which in full. The link carries full pages while the destination's storage
 * reads resolve references, in parallel; a round ends when the slower of the two
 * is done. So the share of mapped pages sent as references is the one that makes
 * both finish together, from the measured link rate, the destination's measured
 * read rate (storage, hashing and applying together) and the fetch backlog it
 * already has. A backlog the storage cannot clear in time turns references off.
 */
/** What the policy reads of a migration (a SourceSession in use; figures in tests). */
export interface PolicyInputs {
  referenceable(page: number): boolean;
  /** The link limit in bytes per second, 0 for none. */
  readonly maxBandwidth: number;
  /** The destination's last PROGRESS: its read rate and fetch backlog. */
  progress(): { readRate: number; pending: number; refsReceived: number };
  refsSent(): number;
}

/** Round 0's link rate before anything is measured, with no limit set: 1 GB/s. */
const PRIOR_LINK_RATE = 1e9;
/** Until the destination has measured its reads, references stop while this many pages are unread (4 MiB). */
const UNMEASURED_BACKLOG = 1024;
/**
 * The storage's share of the round is planned to end at half the link's time. On a
 * machine short of cores, reads and frames compete for the same CPU, so the read rate
 * measured early (few frames yet) overstates what it will be; a backlog left at the end
 * costs settling time, while a full page sent early costs nothing more. Measured: at
 * 0.8, a loaded 2-core run (load average 58) left 1.2-2.4 s of fetch backlog after round 0.
 */
export const STORAGE_HEADROOM = 0.5;
/** Frames timed before the link's rate is trusted. */
const LINK_SAMPLES = 8;

/**
 * The link's capacity: bytes of big frames over the time spent handing them to the
 * socket (waits on the rate limit and on back-pressure included). Unlike bytes over a
 * round's time, it does not drop when a round sends mostly references.
 */
export class LinkMeter {
  private bytes = 0;
  private ms = 0;
  private samples = 0;

  record(bytes: number, ms: number): void {
    this.bytes += bytes;
    this.ms += ms;
    this.samples++;
  }

  /** Bytes per second, or 0 until enough frames were timed. */
  rate(): number {
    return this.samples >= LINK_SAMPLES && this.ms > 0 ? (this.bytes / this.ms) * 1000 : 0;
  }
}

export class RefPolicy {
  /** Mapped and other pages left in this round, as counted at its start. */
  private mapped = 0;
  private unmapped = 0;
  /** References owed and paid (error diffusion over runs, so runs stay whole). */
  private owed = 0;

  constructor(private readonly s: PolicyInputs, private readonly link: LinkMeter) {}

  /** A round is about to send `list`. */
  startRound(list: ArrayLike<number>): void {
    let mapped = 0;
    for (let i = 0; i < list.length; i++) if (this.s.referenceable(list[i])) mapped++;
    this.mapped = mapped;
    this.unmapped = list.length - mapped;
    this.owed = 0;
  }

  /** A page that went in full without a choice (not mapped). */
  sentOther(): void {
    if (this.unmapped > 0) this.unmapped--;
  }

  /** Whether the next run of `count` mapped pages goes as references. */
  takeRun(count: number): boolean {
    const share = this.share();
    this.mapped = Math.max(0, this.mapped - count);
    this.owed += share * count;
    if (this.owed < count / 2) return false;
    this.owed -= count;
    return true;
  }

  /** Link bytes per second: as measured, else the limit, else a prior. */
  linkRate(): number {
    return this.link.rate() || this.s.maxBandwidth || PRIOR_LINK_RATE;
  }

  /**
   * The share f of the mapped pages left to send as references, from
   * (unmapped + (1 - f) * mapped) / link = (backlog + f * mapped) / storage.
   * Before the destination has measured its reads, references go while its backlog is small.
   */
  share(): number {
    const storage = this.s.progress().readRate * STORAGE_HEADROOM;
    if (!(storage > 0)) return this.backlogPages() < UNMEASURED_BACKLOG ? 1 : 0;
    if (this.mapped === 0) return 1;
    const r = this.linkRate() / storage;
    const f = (this.unmapped + this.mapped - this.backlogPages() * r) / (this.mapped * (1 + r));
    return Math.min(1, Math.max(0, f));
  }

  /** Referenced pages the destination has not read yet. */
  private backlogPages(): number {
    const p = this.s.progress();
    return Math.max(0, p.pending + (this.s.refsSent() - p.refsReceived));
  }
}
