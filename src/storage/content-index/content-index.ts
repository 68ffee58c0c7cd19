/**
 * One export's content index, put together: the table in memory, its SQLite file,
 * the persister, and the filter the NBD server serves through.
 *
 * Reloading at start: the stored entries come back only when the index was closed
 * cleanly AND the image is the same file with the same size and mtime (ns) as at
 * that close, AND the capacity is unchanged; otherwise the index starts empty.
 * While the server was down anyone could have written the image; a clean close on
 * an unchanged file is the common restart, and in every other case one pass of
 * the guest's reads rebuilds the index. Reloaded entries are still hints only:
 * the destination's keyed hash catches what this check cannot see (a writer that
 * restored the mtime, a block device whose mtime does not move: never reloaded).
 */
import { promises as fsp } from 'node:fs';
import type { ExportBackend } from '../../../nbd/index.ts';
import { BlockHasher, BLOCK_SIZE, HASH_NAME } from './fast-hash.ts';
import { ContentTable, type CindexCounterName, CINDEX_COUNTER } from './content-table.ts';
import { ContentIndexFilter } from './filter.ts';
import { ContentIndexStore, type CindexMeta, type ImageIdentity } from './store.ts';
import { ContentIndexPersister } from './persister.ts';

/** 4 M entries: 16 GiB of distinct 4 KiB blocks, about 114 MiB of memory. */
export const DEFAULT_CAPACITY = 4 * 1024 * 1024;

export interface ContentIndexOptions {
  /** The SQLite file, e.g. DIR/<export>.cindex.sqlite. */
  path: string;
  exportName: string;
  /** The served file; without one (a memory export) nothing is ever reloaded. */
  imagePath?: string;
  capacity?: number;
  persistIntervalMs?: number;
}

export interface ContentIndexStats {
  export: string;
  entries: number;
  capacity: number;
  memoryBytes: number;
  reloaded: number;
  /** Why the stored entries were not reloaded, or null. */
  reloadRefused: string | null;
  counters: Record<CindexCounterName, number>;
}

/** The image's identity, or null when it has none worth trusting (no file, a block device, gone). */
async function identityOf(path: string | undefined): Promise<ImageIdentity | null> {
  if (!path) return null;
  const st = await fsp.stat(path, { bigint: true }).catch(() => null);
  if (!st?.isFile()) return null; // a block device's mtime does not follow writes
  return { dev: String(st.dev), ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs) };
}

function whyNotReload(previous: CindexMeta | null, now: ImageIdentity | null, capacity: number, image: string | null): string | null {
  if (!previous) return 'no stored index';
  if (!previous.clean) return 'not closed cleanly';
  if (!now || !previous.imageIdentity) return 'the image has no stable identity (not a regular file)';
  if (previous.image !== image) return 'stored for another image';
  if (previous.capacity !== capacity) return 'capacity changed';
  const p = previous.imageIdentity;
  if (p.dev !== now.dev || p.ino !== now.ino) return 'the image is another file now';
  if (p.size !== now.size || p.mtimeNs !== now.mtimeNs) return 'the image changed since the index was closed';
  return null;
}

export class ContentIndex {
  private closed = false;

  private constructor(
    readonly filter: ContentIndexFilter,
    readonly table: ContentTable,
    readonly hasher: BlockHasher,
    private readonly store: ContentIndexStore,
    private readonly persister: ContentIndexPersister,
    readonly options: ContentIndexOptions,
    readonly reloaded: number,
    readonly reloadRefused: string | null,
  ) {}

  static async open(backend: ExportBackend, opts: ContentIndexOptions): Promise<ContentIndex> {
    const capacity = opts.capacity ?? DEFAULT_CAPACITY;
    const table = new ContentTable(capacity);
    const image = opts.imagePath ?? null;
    const { store, previous } = ContentIndexStore.open(opts.path);
    try {
      const refused = whyNotReload(previous, await identityOf(opts.imagePath), capacity, image);
      let hasher: BlockHasher;
      let reloaded = 0;
      if (refused === null && previous) {
        hasher = new BlockHasher(previous.seed);
        reloaded = store.loadInto(table);
        store.setMeta({ clean: false, imageIdentity: null });
      } else {
        hasher = new BlockHasher();
        const meta: CindexMeta = {
          export: opts.exportName, image, hash: HASH_NAME, seed: hasher.seedHex, blockSize: BLOCK_SIZE, capacity,
          createdAt: new Date().toISOString(), clean: false, imageIdentity: null,
        };
        store.reset(meta);
      }
      const persister = new ContentIndexPersister(table, store, opts.persistIntervalMs);
      persister.start();
      const filter = new ContentIndexFilter(backend, table, hasher);
      return new ContentIndex(filter, table, hasher, store, persister, opts, reloaded, refused);
    } catch (err) {
      store.close();
      throw err;
    }
  }

  get path(): string {
    return this.options.path;
  }

  /** Block holding content (hi, lo), or -1. */
  lookup(hi: number, lo: number): number {
    return this.table.lookup(hi, lo);
  }

  /** Writes what changed now (tests and tools; the persister does it on its own). */
  flush(): number {
    return this.persister.flush();
  }

  stats(): ContentIndexStats {
    const counters = Object.fromEntries(Object.keys(CINDEX_COUNTER).map((k) => [k, this.table.count(k as CindexCounterName)])) as Record<CindexCounterName, number>;
    return {
      export: this.options.exportName,
      entries: this.table.size,
      capacity: this.table.capacity,
      memoryBytes: this.table.bytes,
      reloaded: this.reloaded,
      reloadRefused: this.reloadRefused,
      counters,
    };
  }

  /**
   * Final flush, then the image's identity is recorded and the index marked clean.
   * Call after the server stopped sending requests through the filter, before the
   * backend closes.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.persister.stop();
    this.persister.flush();
    const clean = !this.filter.busy;
    this.store.setMeta({ clean, imageIdentity: clean ? await identityOf(this.options.imagePath) : null });
    this.store.close();
  }
}
