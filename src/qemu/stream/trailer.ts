/**
 * The end of a QEMU 7.2 stream, found from behind: QEMU_VM_EOF (0x00), then
 * QEMU_VM_VMDESCRIPTION (0x06), a 32-bit length and that many bytes of JSON, then
 * nothing. JSON text holds no NUL byte, so the last 00 06 whose length reaches exactly
 * to the end is the one. The device state before it is not parsed (that would take
 * every device's vmstate description).
 */
import { SECTION } from './constants.ts';

export function findTrailer(tail: Buffer, base: number): { eofOffset: number; vmdescription: string } | null {
  for (let p = tail.length - 6; p >= 0; p--) {
    if (tail[p] !== SECTION.EOF || tail[p + 1] !== SECTION.VMDESCRIPTION) continue;
    if (tail.readUInt32BE(p + 2) !== tail.length - p - 6) continue;
    const text = tail.subarray(p + 6).toString('utf8');
    try {
      JSON.parse(text);
    } catch {
      return null;
    }
    return { eofOffset: base + p, vmdescription: text };
  }
  return null;
}
