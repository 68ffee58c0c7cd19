/**
 * Back-pressure on QEMU: its socket is paused while too many batches wait for their
 * lookups, hashes or the link, or while more referenced pages are kept than allowed.
 * QEMU then blocks in its own writes, so it measures the bandwidth the whole path
 * really has (its downtime estimate rests on it), and the proxy's memory stays bounded.
 */
import type { SourceProxySession } from './session.ts';

/** Batches (2 MiB of pages each) between QEMU's socket and the link. */
export const MAX_PENDING_BATCHES = 8;

export function adjustFlow(s: SourceProxySession): void {
  const hold = s.pending >= MAX_PENDING_BATCHES || s.kept.bytes >= s.opts.keepBytes;
  if (hold === s.qemuPaused || !s.qemu) return;
  s.qemuPaused = hold;
  if (hold) s.qemu.pause();
  else s.qemu.resume();
}
