/**
 * Content indexes for every export a server serves: one SQLite file per export in
 * one directory, and optionally the query socket. What `livemig nbd serve
 * --content-index DIR` sets up.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ExportSpec, ListenAddress } from '../../../nbd/index.ts';
import { ContentIndex } from './content-index.ts';
import { ContentIndexQueryServer } from './query-server.ts';
import { LivemigError } from '../../errors.ts';

/** DIR/<export>.cindex.sqlite; the default export "" is "default", and names are URI-encoded so none escapes DIR. */
export function indexFileName(exportName: string): string {
  return `${exportName === '' ? 'default' : encodeURIComponent(exportName)}.cindex.sqlite`;
}

export interface IndexedExport {
  spec: ExportSpec;
  /** The served file, when the export is one (enables reloading after a clean stop). */
  imagePath?: string;
}

export class ServedIndexes {
  private query: ContentIndexQueryServer | null = null;

  private constructor(readonly indexes: Map<string, { index: ContentIndex; size: number }>) {}

  /** Wraps each export's backend in its index's filter (spec.backend is replaced). */
  static async open(exports: IndexedExport[], opts: { dir: string; capacity?: number }): Promise<ServedIndexes> {
    const files = new Map<string, string>();
    for (const e of exports) {
      const file = indexFileName(e.spec.name);
      if (files.has(file)) throw new LivemigError('CINDEX_CONFIG', `exports ${JSON.stringify(files.get(file))} and ${JSON.stringify(e.spec.name)} would share ${file}`);
      files.set(file, e.spec.name);
    }
    try {
      mkdirSync(opts.dir, { recursive: true });
    } catch (err) {
      throw new LivemigError('CINDEX_CONFIG', `cannot create ${opts.dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const served = new ServedIndexes(new Map());
    try {
      for (const e of exports) {
        const index = await ContentIndex.open(e.spec.backend, {
          path: join(opts.dir, indexFileName(e.spec.name)),
          exportName: e.spec.name,
          imagePath: e.imagePath && resolve(e.imagePath),
          capacity: opts.capacity,
        });
        served.indexes.set(e.spec.name, { index, size: e.spec.backend.size });
        e.spec.backend = index.filter;
      }
    } catch (err) {
      await served.close();
      throw err;
    }
    return served;
  }

  /** Starts answering lookups on a socket; returns its address. */
  async listen(address: ListenAddress): Promise<string> {
    this.query = new ContentIndexQueryServer(this.indexes);
    await this.query.listen(address);
    return this.query.address;
  }

  get(exportName: string): ContentIndex | undefined {
    return this.indexes.get(exportName)?.index;
  }

  /** Stops the query socket and closes every index (after the NBD server stopped). */
  async close(): Promise<void> {
    await this.query?.close();
    for (const { index } of this.indexes.values()) await index.close();
  }
}
