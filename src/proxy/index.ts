/** src/proxy/: the QEMU migration-stream proxies. Only src/cli imports this room. */
export { runSourceProxy, type SourceProxyOptions, type SourceProxyResult } from './source/index.ts';
export { runDestinationProxy, type DestinationProxyOptions, type DestinationProxyResult } from './destination/index.ts';
export { parseEndpoint, formatEndpoint, type Endpoint } from './endpoint.ts';
