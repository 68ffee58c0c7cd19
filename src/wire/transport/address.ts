/**
 * Where a migration link goes: `tcp://HOST:PORT` or `unix:PATH` (the NBD listen
 * syntax). A destination without credentials listens only where no other host
 * can reach it (loopback or a Unix socket) unless told it may.
 */
import net from 'node:net';
import { parseListenAddress, type ListenAddress } from '../../../nbd/index.ts';

export type LinkAddress = ListenAddress;

/** Parses tcp://HOST:PORT or unix:PATH; throws a plain Error with the reason (callers make it a usage error). */
export function parseLinkAddress(s: string): LinkAddress {
  return parseListenAddress(s);
}

export function formatLinkAddress(a: LinkAddress): string {
  return a.transport === 'unix' ? `unix:${a.path}` : `tcp://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}

/** Whether only this host can reach the address: a Unix socket, 127.0.0.0/8, ::1, localhost. */
export function isLocalOnly(a: LinkAddress): boolean {
  if (a.transport === 'unix') return true;
  const h = a.host.toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  return net.isIPv4(h) && h.startsWith('127.');
}
