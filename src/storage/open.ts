/** Opens a disk by what the user typed: an NBD URI, or else a file path. */
import { isNbdUri } from '../../nbd/index.ts';
import type { BlockBackend } from './backend.ts';
import { FileBackend } from './file-backend.ts';
import { NbdBackend } from './nbd-backend.ts';

/** `leaseToken`: on an NBD disk, acquire its lease as this token (the guest's own connection). */
export function openBackend(spec: string, opts: { readOnly?: boolean; lock?: boolean; leaseToken?: string } = {}): Promise<BlockBackend> {
  return isNbdUri(spec) ? NbdBackend.open(spec, { leaseToken: opts.leaseToken }) : FileBackend.open(spec, opts);
}
