/**
 * The source never falls silent after WELCOME: while it waits (its rate limit,
 * its hashing, settling rounds, the destination's drain) an empty PAGES goes
 * out whenever nothing else did for SOURCE_KEEPALIVE_MS, so the destination's
 * idle watch (destination/idle.ts) cuts only a source that is stuck or gone.
 */
import { SOURCE_KEEPALIVE_MS } from '../../wire/index.ts';
import type { SourceSession } from './session.ts';

/** A PAGES payload of no entries (count u32 = 0): every destination accepts and ignores it. */
const EMPTY_PAGES = Buffer.alloc(4);

/** Starts the keepalive (it sends only once WELCOME has arrived); returns the function that stops it. */
export function keepAlive(s: SourceSession): () => void {
  let sent = s.channel.bytesSent;
  const timer = setInterval(() => {
    // Something went since the last tick, or bytes are still queued for the link: the destination hears us.
    const quiet = s.channel.bytesSent === sent && s.channel.socket.writableLength === 0;
    if (quiet && s.welcome) void s.channel.send({ name: 'PAGES', body: EMPTY_PAGES }).catch(() => {});
    sent = s.channel.bytesSent;
  }, SOURCE_KEEPALIVE_MS);
  return () => clearInterval(timer);
}
