/**
 * Every error livemig raises carries one stable `code` from this table, one code
 * per meaning, so callers (and scripts reading the CLI's `[CODE]`) can switch on
 * it. docs/errors.md lists the same table; a test keeps the two in agreement.
 * Errors of the NBD library (nbd/, NbdError) keep their own NBD_* codes.
 */
export const ERROR_CODES = {
  // The migration protocol and engine (codes that can also travel in an ERROR frame).
  MIGRATE_PROTOCOL: 'the peer broke the protocol: an unknown or oversized frame, a malformed payload, a frame out of order',
  MIGRATE_VERSION: 'the two sides share no protocol version',
  MIGRATE_CAPABILITY: 'the peer lacks a capability this side requires',
  MIGRATE_LAYOUT: 'the guest does not fit this destination: page size, or another memory size than it was prepared for',
  MIGRATE_STORAGE: "the guest's disk cannot be opened or read on this host, or the destination's disk is not the one the source migrates",
  MIGRATE_CONNECT_FAILED: 'the destination cannot be reached',
  MIGRATE_LINK_LOST: 'the migration link closed before the migration ended',
  MIGRATE_TIMEOUT: 'the peer did not answer in time',
  MIGRATE_VERIFY_FAILED: "the destination's memory differs from the source's after the transfer",
  MIGRATE_NOT_CONVERGED: 'pre-copy did not converge within the rounds allowed, and the policy is to give up',
  MIGRATE_DESTINATION_BUSY: 'the destination is already receiving another guest',
  MIGRATE_IN_PROGRESS: 'this guest is already migrating',
  MIGRATE_CANCELLED: 'the migration was cancelled on this side',
  MIGRATE_GUEST_STATE: 'the guest is in no state to migrate (it stopped or failed)',
  MIGRATE_FAILED: 'the peer failed for a reason it did not name',
  MIGRATE_LEASE: "the destination could not take the disk's lease from the source: the source kept the guest",
  MIGRATE_HANDED_OVER: "the switch-over was not confirmed, but the destination holds the disk's lease: the guest is the destination's, the source let go",
  MIGRATE_OUTCOME_UNKNOWN: 'the link failed after the destination could have resumed the guest: the source stays paused until an operator checks the destination',
  MIGRATE_TLS: 'the TLS handshake of the migration link failed: wrong key or certificate, or a peer without TLS',
  MIGRATE_TLS_CONFIG: 'the migration credentials cannot be used: a missing or malformed certificate, key or PSK file',
  MIGRATE_INSECURE: 'a destination without TLS credentials was asked to listen where other hosts can reach it (loopback or unix:PATH only, unless --insecure)',
  // The guest.
  GUEST_CONFIG: 'the guest was asked for with an impossible configuration',
  GUEST_START: 'the guest could not start',
  GUEST_EXITED: "the guest's worker has exited",
  GUEST_FAILED: 'the guest stopped after an error of its disk or workload',
  GUEST_RUNNING: 'the request needs a paused guest',
  GUEST_NO_DEVICE: 'the guest has no device state yet (a destination still waiting for it)',
  GUEST_HAS_DEVICE: 'the guest already has its device state',
  GUEST_DEVICE_STATE: 'the device state that arrived cannot be read (malformed, or of another version)',
  GUEST_DISK_DETACHED: "the guest's disk is detached (handed over to another host)",
  GUEST_DISK_LOCKED: "the guest's disk file is locked by another process",
  GUEST_DISK_OPEN: "the guest's disk file cannot be opened",
  GUEST_DISK_LEASED: "another guest holds the disk's lease (it was handed over to another host)",
  GUEST_MIGRATED: 'the guest has migrated away and runs on the destination',
  GUEST_NOT_HERE: 'no guest here yet: this destination is waiting for one',
  // The control socket.
  CONTROL_BAD_REQUEST: 'the control request is malformed or unknown',
  CONTROL_UNREACHABLE: "the guest's control socket cannot be reached",
  CONTROL_CLOSED: 'the control socket closed before answering',
  CONTROL_TIMEOUT: 'the control request got no answer in time',
  CONTROL_FAILED: 'the control request failed for a reason it did not name',
  // p2b map databases.
  P2B_NOT_FOUND: 'no p2b map database at that path',
  P2B_FOREIGN_FILE: 'the file is not a livemig p2b map database',
  P2B_SCHEMA_VERSION: 'the p2b map database has a schema this build does not read',
  P2B_WRITE: 'the p2b map database cannot be created or written (its file system is full or read-only)',
  P2B_MISMATCH: 'the p2b map and the memory image or storage do not describe the same guest',
  // QEMU guests: the migration-stream parser, QMP, the test guest.
  QEMU_STREAM_NOT_QEMU: 'the stream does not start like a QEMU migration stream (garbage, TLS, a multifd channel)',
  QEMU_STREAM_UNSUPPORTED: 'the QEMU stream uses something livemig cannot carry (xbzrle, compress, multifd, postcopy, a return path)',
  QEMU_STREAM_MALFORMED: 'the QEMU stream breaks its format (a bad footer, lengths out of bounds, an unknown block)',
  QEMU_STREAM_TRUNCATED: 'the QEMU stream ended before it was complete',
  QEMU_LAUNCH: 'QEMU could not be started',
  QMP_CONNECT: "QEMU's monitor socket did not accept or greet in time",
  QMP_PROTOCOL: "QEMU's monitor does not speak QMP (a bad greeting, bad JSON)",
  QMP_COMMAND: 'QEMU answered a monitor command with an error',
  QMP_CLOSED: "QEMU's monitor closed with commands or waits pending",
  QMP_TIMEOUT: 'an awaited QEMU event did not come in time',
  SERIAL_TIMEOUT: "the guest's serial console did not answer in time",
  GUEST_IMAGE_TOOL: 'a program the guest image build needs is missing or failed',
  GUEST_IMAGE_KERNEL: 'the kernel package could not be downloaded or unpacked',
  GUEST_IMAGE_DISK: 'not enough files for the guest disk, or mke2fs failed',
  GUEST_IMAGE_LOCKED: 'another build held the guest image cache too long',
  // The QEMU migration-stream proxies (livemig qemu-proxy).
  QEMU_PROXY_LISTEN: 'a stream proxy cannot listen on its address (in use, or a bad path)',
  QEMU_PROXY_QEMU_UNREACHABLE: "the destination proxy cannot reach QEMU's -incoming socket",
  QEMU_PROXY_QEMU_CLOSED: 'QEMU closed its migration socket or stopped reading before the stream ended (it died, or refused the stream)',
  QEMU_PROXY_STALLED: 'a stream proxy moved no byte for too long: QEMU, the link or the storage is stuck',
  // The NBD server's content index (nbd serve --content-index) and its query socket.
  CINDEX_NOT_FOUND: 'no content index database at that path',
  CINDEX_FOREIGN_FILE: 'the file is not a livemig content index',
  CINDEX_CONFIG: 'a content index option is impossible (capacity, path)',
  CINDEX_BAD_REQUEST: 'the content index query is malformed or too large',
  CINDEX_NO_EXPORT: 'the query names an export that has no content index',
  CINDEX_CONNECT_FAILED: "the content index's query socket cannot be reached",
  CINDEX_CLOSED: 'the content index query socket closed before answering',
  CINDEX_PROTOCOL: 'the content index peer broke the query protocol',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class LivemigError extends Error {
  constructor(readonly code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LivemigError';
  }
}

/** The code of any error: ours, the NBD library's, or a plain Error's (undefined). */
export function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
