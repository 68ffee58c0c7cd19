/**
 * Back-pressure on QEMU: its socket is paused while too many batches wait for their
 * lookups, hashes or the link, while more referenced pages are kept than allowed, or
 * while more of its stream is in flight than the window (read here, not yet written
 * to the destination QEMU, as QEMU_ACK tells). QEMU then blocks in its own writes, so
 * it measures the bandwidth the whole path really has (its downtime estimate rests on
 * it), the proxy's memory stays bounded, and what must drain after QEMU pauses the
 * guest is at most a window: with the 32 MiB a destination held before, the drain
 * added some 400 ms to the guest's pause.
 */
import type { SourceProxySession } from './session.ts';

/** Batches (2 MiB of pages each) between QEMU's socket and the link. */
export const MAX_PENDING_BATCHES = 8;
/** Stream bytes in flight between the two QEMUs: some 30 ms of the stream at the 250-300 MB/s QEMU loads here. */
export const DEFAULT_WINDOW_BYTES = 8 << 20;

export function adjustFlow(s: SourceProxySession): void {
  const inFlight = s.streamBytes - s.streamAcked;
  const hold = s.pending >= MAX_PENDING_BATCHES || s.kept.bytes >= s.opts.keepBytes || inFlight >= (s.opts.windowBytes ?? DEFAULT_WINDOW_BYTES);
  if (hold === s.qemuPaused || !s.qemu) return;
  s.qemuPaused = hold;
  if (hold) s.qemu.pause();
  else s.qemu.resume();
}
