/** Disk images with random content, as a guest's data looks to the p2b map (every block distinct). */
export { makeDiskImage as randomImage } from '../../src/demo/disk-image.ts';
