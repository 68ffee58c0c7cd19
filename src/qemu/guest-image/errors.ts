/** Errors of the guest-image builder, with stable codes. */
import { LivemigError } from '../../errors.ts';

export type GuestImageErrorCode =
  | 'GUEST_IMAGE_TOOL' // a program the build needs is missing or failed
  | 'GUEST_IMAGE_KERNEL' // the kernel package could not be downloaded or unpacked
  | 'GUEST_IMAGE_DISK' // not enough files for the disk, or mke2fs failed
  | 'GUEST_IMAGE_LOCKED'; // another build held the cache too long

export class GuestImageError extends LivemigError {
  constructor(code: GuestImageErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'GuestImageError';
  }
}
