/** How migration links are made: addresses, credentials, the source's connect and the destination's listener. */
export { parseLinkAddress, formatLinkAddress, isLocalOnly, type LinkAddress } from './address.ts';
export { loadLinkSecurity, sessionKey, KEY_EXPORTER_LABEL, type LinkSecurity, type LinkCredentialPaths } from './security.ts';
export { connectLink, type Link } from './connect.ts';
export { listenLinks, checkExposure, MAX_PENDING, LISTEN_BACKLOG, type LinkServer, type LinkListenOptions, type LinkHandlers } from './listen.ts';
