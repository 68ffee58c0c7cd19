/** Two random disk images, one behind `livemig nbd serve` and one behind `nbdkit file` (when installed). */
import { join } from 'node:path';
import { haveTool } from './tools.ts';
import { startNbdkit, type Peer } from './processes.ts';
import { randomImage } from './disk-image.ts';
import { startNbdServe, type ServeProcess } from './nbd-serve.ts';

export interface SharedDisks {
  ours: ServeProcess;
  kit: Peer | null;
  stop: () => Promise<void>;
}

export async function startSharedDisks(dir: string, bytes: number): Promise<SharedDisks> {
  randomImage(join(dir, 'ours.img'), bytes);
  randomImage(join(dir, 'kit.img'), bytes);
  const ours = await startNbdServe(['--export', `disk=${join(dir, 'ours.img')}`]);
  const kit = haveTool('nbdkit') ? await startNbdkit(dir, 'file', [join(dir, 'kit.img')]) : null;
  return { ours, kit, stop: async () => (await ours.stop(), await kit?.stop()) };
}
