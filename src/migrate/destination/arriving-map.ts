/**
 * The p2b map travels with the guest: the destination's map starts from the
 * references it verified and applied, corrected by the source's map at pause
 * (MAP frame). A page that later arrives as bytes loses its entry.
 */
import { P2B, type P2bMap } from '../../p2b/map.ts';
import type { MapCorrection } from '../../wire/index.ts';

export class ArrivingMap {
  private readonly entries = new Map<number, number>();

  applied(page: number, block: number): void {
    this.entries.set(page, block);
  }

  replaced(page: number): void {
    this.entries.delete(page);
  }

  correct(corrections: readonly MapCorrection[]): void {
    for (const [page, block] of corrections) {
      if (block === null) this.entries.delete(page);
      else this.entries.set(page, block);
    }
  }

  get size(): number {
    return this.entries.size;
  }

  /** Into the guest's (empty) map, as read mappings: referenceable from the start. */
  restoreInto(map: P2bMap): void {
    map.restoreAll(this.entries, P2B.READ);
  }
}
