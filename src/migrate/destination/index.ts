/**
 * The destination side of a live migration (docs/protocol.md has the state diagram):
 *
 *   LISTENING -> HANDSHAKE -> RECEIVING -> DRAINING -> VERIFYING -> RUNNING | PAUSED
 *                     \____________\___________\____________\______> FAILED -> LISTENING
 *
 * Each phase is a file of this folder working on one DestinationSession.
 */
export { listenIncoming, type Incoming } from './listener.ts';
export type { DestinationState, IncomingOptions } from './session.ts';
export { FetchQueue, FETCH_DEFAULTS, type FetchOptions, type FetchStats, type FetchTarget } from '../fetch-queue.ts';
export { PageVersions } from './page-versions.ts';
