/**
 * The destination proxy's fetch target: referenced pages are numbered in stream order
 * (the fetch queue's "page" is that number), each belongs to one run waiting in the
 * output. A verified block lands in its run; a failed check asks the source for the
 * pages in full (QEMU_REF_REQUEST), whose answer lands the same way. Every reference
 * has one version only, so none is ever stale.
 */
import { LivemigError } from '../../errors.ts';
import type { FetchTarget } from '../../migrate/fetch-queue.ts';
import { MAX_REF_RUN, PAGE_SIZE, type RefRange } from '../../wire/index.ts';
import type { RefRun } from './ref-run.ts';

export class RefSlots implements FetchTarget {
  /** Runs not yet written to QEMU, in stream order. */
  private runs: RefRun[] = [];
  private head = 0;
  /** Referenced pages received so far (the next one's number), and those asked for again. */
  received = 0;
  retried = 0;
  /** Pages asked for in full whose answer has not come yet. */
  owed = 0;

  constructor(private readonly ready: () => void, private readonly request: (ranges: RefRange[]) => void) {}

  add(run: RefRun): void {
    this.runs.push(run);
    this.received += run.count;
  }

  /** The output wrote the oldest run. */
  written(): void {
    this.runs[this.head++] = undefined as unknown as RefRun;
    if (this.head > 4096 && this.head * 2 > this.runs.length) {
      this.runs = this.runs.slice(this.head);
      this.head = 0;
    }
  }

  isCurrent(): boolean {
    return true;
  }

  apply(page: number, bytes: Uint8Array): void {
    const run = this.find(page);
    if (run.fill(page - run.first, bytes)) this.ready();
  }

  mismatched(pages: number[]): void {
    pages.sort((a, b) => a - b);
    const ranges: RefRange[] = [];
    for (const p of pages) {
      const last = ranges[ranges.length - 1];
      if (last && last[0] + last[1] === p && last[1] < MAX_REF_RUN) last[1]++;
      else ranges.push([p, 1]);
    }
    this.retried += pages.length;
    this.owed += pages.length;
    this.request(ranges);
  }

  /** QEMU_REF_DATA: pages first.. in full from the source. */
  fillFromSource(first: number, pages: number, data: Buffer): void {
    let ready = false;
    for (let i = 0; i < pages; i++) {
      const run = this.find(first + i);
      ready = run.fill(first + i - run.first, data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)) || ready;
    }
    this.owed = Math.max(0, this.owed - pages);
    if (ready) this.ready();
  }

  private find(page: number): RefRun {
    let lo = this.head;
    let hi = this.runs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.runs[mid].first <= page) lo = mid;
      else hi = mid - 1;
    }
    const run = this.runs[lo];
    if (!run || page < run.first || page >= run.first + run.count) throw new LivemigError('MIGRATE_PROTOCOL', `referenced page ${page} is not waiting here`);
    return run;
  }
}
