/**
 * The p2b map travels with the guest: the destination's map starts from the
 * references it verified and applied, corrected by the source's map at pause
 * (MAP frame). A page that later arrives as bytes loses its entry. One block
 * number per page in a typed array: with `auto`, many mapped pages go in full
 * and come back as corrections, and a Map of them cost 100 ms per GiB at resume.
 */
import { NO_BLOCK, P2B, type P2bMap } from '../../p2b/map.ts';
import { MAP_NO_BLOCK, type MapCorrections } from '../../wire/index.ts';

export class ArrivingMap {
  private readonly blocks: Uint32Array;
  private count = 0;

  constructor(pages: number) {
    this.blocks = new Uint32Array(pages).fill(NO_BLOCK);
  }

  applied(page: number, block: number): void {
    if (this.blocks[page] === NO_BLOCK) this.count++;
    this.blocks[page] = block;
  }

  replaced(page: number): void {
    if (this.blocks[page] === NO_BLOCK) return;
    this.blocks[page] = NO_BLOCK;
    this.count--;
  }

  correct(c: MapCorrections): void {
    for (let i = 0; i < c.pages.length; i++) {
      if (c.blocks[i] === MAP_NO_BLOCK) this.replaced(c.pages[i]);
      else this.applied(c.pages[i], c.blocks[i]);
    }
  }

  get size(): number {
    return this.count;
  }

  /** Into the guest's (empty) map, as read mappings: referenceable from the start. */
  restoreInto(map: P2bMap): void {
    map.restoreAll(this.entries(), P2B.READ);
  }

  private *entries(): Generator<[number, number]> {
    const b = this.blocks;
    for (let p = 0; p < b.length; p++) if (b[p] !== NO_BLOCK) yield [p, b[p]];
  }
}
