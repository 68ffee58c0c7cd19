/**
 * Mutation operators shared by the protocol fuzzers: byte-level (flip, overwrite
 * with an interesting integer, truncate, extend, splice, duplicate) and JSON-level
 * (replace, delete or add a field anywhere in an object). Every choice comes from
 * the seeded Rng, so a case is reproduced from its seed alone.
 */
import type { Rng } from '../../src/util/rng.ts';

/** Integers that sit on boundaries parsers get wrong. */
export const INTERESTING_U32 = [0, 1, 2, 3, 4, 7, 8, 12, 16, 255, 256, 4095, 4096, 4097, 65535, 65536, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

export function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

export function chance(rng: Rng, p: number): boolean {
  return rng.float() < p;
}

export function randomBytes(rng: Rng, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  rng.fill(b);
  return b;
}

/** One byte-level mutation of `data` (a copy; `other` is a donor for splices). */
export function mutateBytes(rng: Rng, data: Buffer, other?: Buffer): Buffer {
  const b = Buffer.from(data);
  const at = () => rng.int(Math.max(1, b.length));
  switch (rng.int(8)) {
    case 0: // flip bits
      if (b.length) for (let i = 1 + rng.int(4); i > 0; i--) b[at()] ^= 1 << rng.int(8);
      return b;
    case 1: // an interesting u32 somewhere
      if (b.length >= 4) b.writeUInt32BE(pick(rng, INTERESTING_U32), rng.int(b.length - 3));
      return b;
    case 2: // an interesting u16
      if (b.length >= 2) b.writeUInt16BE(pick(rng, INTERESTING_U32) & 0xffff, rng.int(b.length - 1));
      return b;
    case 3: // truncate
      return b.subarray(0, rng.int(b.length + 1));
    case 4: // extend with random bytes
      return Buffer.concat([b, randomBytes(rng, 1 + rng.int(64))]);
    case 5: // splice a piece of the donor in
      if (other?.length) {
        const from = rng.int(other.length);
        const piece = other.subarray(from, from + 1 + rng.int(256));
        const to = at();
        return Buffer.concat([b.subarray(0, to), piece, b.subarray(to + piece.length)]);
      }
      return b;
    case 6: { // duplicate a range
      const from = at();
      const piece = b.subarray(from, from + 1 + rng.int(64));
      return Buffer.concat([b.subarray(0, from), piece, b.subarray(from)]);
    }
    default: // random bytes overwrite a range
      if (b.length) randomBytes(rng, Math.min(b.length, 1 + rng.int(16))).copy(b, at());
      return b;
  }
}

/** JSON values that validators get wrong. */
function interestingValue(rng: Rng): unknown {
  switch (rng.int(14)) {
    case 0: return null;
    case 1: return -1;
    case 2: return 2 ** 53;
    case 3: return 1.5;
    case 4: return pick(rng, [0, 1, 4096, 2 ** 32, 2 ** 40, 2 ** 45, Number.MAX_SAFE_INTEGER]);
    case 5: return '';
    case 6: return 'x'.repeat(pick(rng, [257, 4097, 70000]));
    case 7: return pick(rng, ['../../../fuzz-escape', '/fuzz-escape/abs', 'a/../../b', 'nbd://127.0.0.1:1/x', '\u0000', 'ff'.repeat(16)]);
    case 8: return [];
    case 9: return Array.from({ length: pick(rng, [1, 17, 65, 5000]) }, () => rng.int(100));
    case 10: return {};
    case 11: return true;
    case 12: return { firstPage: 0, pages: pick(rng, [1, 1024, 262144, 262145]) };
    default: return rng.u32();
  }
}

/** Paths to every value inside a JSON object (objects and arrays walked, depth-bounded). */
function paths(v: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = [], depth = 0): (string | number)[][] {
  if (depth > 6 || v === null || typeof v !== 'object') return out;
  const entries: [string | number, unknown][] = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v as object);
  for (const [k, x] of entries.slice(0, 64)) {
    out.push([...prefix, k]);
    paths(x, [...prefix, k], out, depth + 1);
  }
  return out;
}

/** A structure-aware mutation of a JSON object: one field replaced, removed or added, anywhere. */
export function mutateJson(rng: Rng, value: object): object {
  const copy = structuredClone(value) as Record<string | number, unknown>;
  const all = paths(copy);
  if (!all.length) return { [String(rng.u32())]: interestingValue(rng) };
  const path = pick(rng, all);
  let parent: Record<string | number, unknown> = copy;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  const key = path[path.length - 1];
  const op = rng.int(4);
  if (op === 0 && !Array.isArray(parent)) delete parent[key];
  else if (op === 1) parent[Array.isArray(parent) ? parent.length : `fuzz${rng.int(100)}`] = interestingValue(rng);
  else parent[key] = interestingValue(rng);
  return copy;
}
