/**
 * Two random disk images, one behind `livemig nbd serve` and one behind `nbdkit
 * file` (when installed), started before a test file's tests and stopped after.
 */
import { before, after } from 'node:test';
import { join } from 'node:path';
import { haveTool } from './tools.ts';
import { startNbdkit, type Peer } from './processes.ts';
import { randomImage } from './disk-image.ts';
import { startNbdServe, type ServeProcess } from './nbd-serve.ts';

export interface SharedDisks {
  /** URI of the export on livemig's server. */
  ours: () => string;
  /** URI of nbdkit's export (only when nbdkit is installed). */
  kit: () => string;
}

export function useSharedDisks(dir: string, bytes: number): SharedDisks {
  let ours: ServeProcess | undefined;
  let kit: Peer | null = null;
  before(async () => {
    randomImage(join(dir, 'ours.img'), bytes);
    randomImage(join(dir, 'kit.img'), bytes);
    ours = await startNbdServe(['--export', `disk=${join(dir, 'ours.img')}`]);
    if (haveTool('nbdkit')) kit = await startNbdkit(dir, 'file', [join(dir, 'kit.img')]);
  });
  after(async () => {
    await ours?.stop();
    await kit?.stop();
  });
  return { ours: () => ours!.uri('disk'), kit: () => kit!.uri() };
}
