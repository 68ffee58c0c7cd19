/** Guest memory geometry: 4 KiB pages in regions of at most 1 GiB (a SharedArrayBuffer each). */
export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;
export const MAX_REGION_BYTES = 1024 * 1024 * 1024;

export interface RegionLayout {
  index: number;
  firstPage: number;
  pages: number;
}

export function regionLayout(memoryBytes: number): RegionLayout[] {
  if (!Number.isSafeInteger(memoryBytes) || memoryBytes <= 0 || memoryBytes % PAGE_SIZE !== 0) {
    throw new RangeError(`guest memory must be a positive multiple of ${PAGE_SIZE} bytes, got ${memoryBytes}`);
  }
  const regions: RegionLayout[] = [];
  const pagesPerRegion = MAX_REGION_BYTES / PAGE_SIZE;
  const total = memoryBytes / PAGE_SIZE;
  for (let first = 0; first < total; first += pagesPerRegion) {
    regions.push({ index: regions.length, firstPage: first, pages: Math.min(pagesPerRegion, total - first) });
  }
  return regions;
}
