/** src/wire/: the livemig migration protocol. Everything above imports it from here. */
export * from './protocol.ts';
export * from './messages.ts';
export { type Message, type MessageOf } from './codec.ts';
export { Channel, peerError } from './channel.ts';
export { chooseVersion, migrationKey, requireCapabilities, shared } from './handshake.ts';
export { pageHash, digest, sampleBlocks, HMAC_ALGORITHM } from './keyed-hash.ts';
export { PageBatch, decodePages, encodePageRequest, decodePageRequest, encodeMap, decodeMap, type PageEntry, type MapCorrection, type MapCorrections } from './pages.ts';
export { xbzrleEncode, xbzrleDecode, XBZRLE_LIMIT } from './xbzrle.ts';
export { lz4Compress, lz4Decompress } from './lz4-page.ts';
export {
  QemuStreamFrame, decodeQemuStream, encodeQemuAck, decodeQemuAck, encodeRefRequest, decodeRefRequest, encodeRefData, decodeRefData,
  type QemuEntry, type RefRange,
} from './qemu-stream.ts';
export * from './transport/index.ts';
