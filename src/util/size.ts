/** Byte sizes and rates as users type them: 256MiB, 1GiB, 4096, 1Gbit. */

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1000, kib: 1024,
  m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1000 ** 4, tib: 1024 ** 4,
};

/** Parses "256MiB", "1G", "4096"; returns null when the text is not a size. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) return null;
  const unit = UNITS[m[2].toLowerCase()];
  if (unit === undefined) return null;
  const value = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(value) ? value : null;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

const BIT_UNITS: Record<string, number> = { bit: 1 / 8, kbit: 1000 / 8, mbit: 1e6 / 8, gbit: 1e9 / 8, tbit: 1e12 / 8 };

/** A rate in bytes per second: "1Gbit", "100Mbit", "512MiB" (per second), "0" (no limit). */
export function parseRate(text: string): number | null {
  const t = text.trim().replace(/\/s$|ps$/i, '');
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(t);
  if (!m) return null;
  const bit = BIT_UNITS[m[2].toLowerCase()];
  if (bit !== undefined) return Math.round(Number(m[1]) * bit);
  return parseSize(t);
}

/** A duration in milliseconds: "300", "300ms", "1.5s". */
export function parseDuration(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$/.exec(text);
  if (!m) return null;
  return Number(m[1]) * (m[2] === 's' ? 1000 : 1);
}

export function formatRate(bytesPerSecond: number): string {
  if (bytesPerSecond <= 0) return 'unlimited';
  const bits = bytesPerSecond * 8;
  return bits >= 1e9 ? `${(bits / 1e9).toFixed(2)} Gbit/s` : `${(bits / 1e6).toFixed(1)} Mbit/s`;
}
