/**
 * Which version of each page the destination holds: every page update carries a
 * sequence number, and only a newer one may land (a fetched block whose page got
 * a newer version meanwhile must not). Also the pages asked for in full after a
 * failed check, until some newer version of them arrives.
 */
export class PageVersions {
  private readonly lastSeq: Uint32Array;
  private readonly awaiting = new Set<number>();

  constructor(pages: number) {
    this.lastSeq = new Uint32Array(pages);
  }

  /** A version of the page arrived: true if it is newer than all before it (it is now the current one). */
  accept(page: number, seq: number): boolean {
    if (seq <= this.lastSeq[page]) return false;
    this.lastSeq[page] = seq;
    this.awaiting.delete(page); // any newer version settles a request (a reference that fails again re-requests it)
    return true;
  }

  isCurrent(page: number, seq: number): boolean {
    return this.lastSeq[page] === seq;
  }

  /** These pages were asked for in full. */
  requested(pages: readonly number[]): void {
    for (const p of pages) this.awaiting.add(p);
  }

  /** Pages asked for and not yet arrived. */
  get owed(): number {
    return this.awaiting.size;
  }
}
