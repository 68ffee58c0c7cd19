/**
 * A cpio archive in the "newc" format the kernel unpacks as an initramfs. Written
 * here rather than with cpio(1) so that device nodes (/dev/console) need no root,
 * and so that the same entries always give the same bytes (mtime 0, fixed inodes).
 */

export type CpioEntry =
  | { path: string; type: 'dir'; mode?: number }
  | { path: string; type: 'file'; data: Buffer; mode?: number }
  | { path: string; type: 'symlink'; target: string }
  | { path: string; type: 'char'; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function header(fields: number[], name: string): Buffer {
  const hex = fields.map((f) => f.toString(16).padStart(8, '0')).join('');
  return Buffer.from(`070701${hex}${name}\0`, 'latin1');
}

const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);

function entryParts(e: CpioEntry, ino: number): Buffer[] {
  let mode: number;
  let data: Buffer = Buffer.alloc(0);
  let rdev = [0, 0];
  if (e.type === 'dir') mode = S_IFDIR | (e.mode ?? 0o755);
  else if (e.type === 'file') (mode = S_IFREG | (e.mode ?? 0o644)), (data = e.data);
  else if (e.type === 'symlink') (mode = S_IFLNK | 0o777), (data = Buffer.from(e.target));
  else (mode = S_IFCHR | (e.mode ?? 0o600)), (rdev = [e.major, e.minor]);
  const name = e.path.replace(/^\/+/, '');
  // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
  const h = header([ino, mode, 0, 0, e.type === 'dir' ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], name.length + 1, 0], name);
  return [h, pad4(h.length), data, pad4(data.length)];
}

/** The archive's bytes: entries in the order given (parents before children), then the trailer. */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((e, i) => parts.push(...entryParts(e, i + 1)));
  const trailer = header([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 'TRAILER!!!'.length + 1, 0], 'TRAILER!!!');
  parts.push(trailer, pad4(trailer.length));
  return Buffer.concat(parts);
}
