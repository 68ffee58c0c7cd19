/**
 * The destination's fetch target: resolved pages land in guest memory if they are
 * still their page's newest version, and the map that travels learns their blocks.
 * Also holds the test-only stale-block fault (faults.ts).
 */
import type { GuestMemory } from '../../guest/memory.ts';
import type { Faults } from '../faults.ts';
import type { FetchTarget } from '../fetch-queue.ts';
import type { PageVersions } from './page-versions.ts';
import type { ArrivingMap } from './arriving-map.ts';

export class MemoryTarget implements FetchTarget {
  /** Test-only: stale blocks that differed from their page when they arrived. */
  private readonly staleKept: { page: number; bytes: Buffer }[] = [];

  constructor(
    private readonly memory: GuestMemory,
    private readonly versions: PageVersions,
    private readonly arriving: ArrivingMap,
    readonly mismatched: (pages: number[]) => void,
    private readonly faults?: Faults,
  ) {}

  isCurrent(page: number, seq: number): boolean {
    return this.versions.isCurrent(page, seq);
  }

  apply(page: number, bytes: Uint8Array, block: number): void {
    this.memory.setPage(page, bytes);
    this.arriving.applied(page, block);
  }

  stale(page: number, bytes: Uint8Array): void {
    if (!this.faults?.applyStaleBlock || this.staleKept.length >= 4096 || Buffer.compare(bytes, this.memory.page(page)) === 0) return;
    this.staleKept.push({ page, bytes: Buffer.from(bytes) });
  }

  /** Test-only fault: once drained (so no newer version heals it), one stale block that still differs lands. */
  applyStaleForTest(): void {
    const f = this.faults;
    if (!f?.applyStaleBlock || f.fired?.applyStaleBlock !== undefined) return;
    const s = this.staleKept.find((x) => Buffer.compare(x.bytes, this.memory.page(x.page)) !== 0);
    if (!s) return;
    this.memory.setPage(s.page, s.bytes);
    (f.fired ??= {}).applyStaleBlock = s.page;
  }
}
