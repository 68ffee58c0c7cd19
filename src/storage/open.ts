/** Opens a disk by what the user typed: an NBD URI, or else a file path. */
import { isNbdUri } from '../../nbd/index.ts';
import type { BlockBackend } from './backend.ts';
import { FileBackend } from './file-backend.ts';
import { NbdBackend } from './nbd-backend.ts';

export function openBackend(spec: string, opts: { readOnly?: boolean; lock?: boolean } = {}): Promise<BlockBackend> {
  return isNbdUri(spec) ? NbdBackend.open(spec) : FileBackend.open(spec, opts);
}
