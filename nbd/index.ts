/** nbd/: the NBD protocol — codecs, server, client, URIs. Knows nothing of migration. */
export * from './constants.ts';
export * from './errors.ts';
export * from './uri.ts';
export type { Logger } from './logger.ts';
export { NbdClient, type NbdClientOptions, type LeaseCall } from './client/client.ts';
export { OPT_LEASE, REP_LEASE, LEASE_OP, MAX_LEASE_TOKEN, type LeaseOp, type LeaseState, type LeaseRequest } from './lease.ts';
export { NbdServer, type NbdServerOptions, MIN_MAX_REQUEST, MAX_MAX_REQUEST } from './server/server.ts';
export type { TlsMode } from './server/negotiation.ts';
export { loadX509, loadPsk, startServerTls, startClientTls, clientIdentity, type TlsCredentials, type TlsEnd, type ClientTlsParams } from './tls.ts';
export { parseListenAddress, type ListenAddress } from './server/listen-address.ts';
export type { ExportBackend, ExportSpec } from './server/export.ts';
export { FileExport } from './server/file-export.ts';
export { MemoryExport } from './server/memory-export.ts';
// Building blocks other framed protocols reuse (livemig's migration link, its fetch queue, disk locks).
export { SocketReader } from './socket-reader.ts';
export { BufferPool, MIN_POOLED } from './buffer-pool.ts';
export { flock, isLockConflict } from './server/flock.ts';
