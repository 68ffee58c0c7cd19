/**
 * What the destination says while the source sends: pages it wants in full
 * (a reference failed its check), fetch progress (for the downtime estimate),
 * RESUMED, or ERROR. The reader only records; the phase that is sending acts
 * on it, so pages go out from one place at a time.
 */
import { LivemigError } from '../../errors.ts';
import { decodePageRequest, peerError } from '../../wire/index.ts';
import type { SourceSession } from './session.ts';

export function startReturnPath(s: SourceSession): void {
  s.channel.only(['PAGE_REQUEST', 'PROGRESS', 'RESUMED']);
  void (async () => {
    for (;;) {
      const m = await s.channel.read();
      if (m.name === 'PAGE_REQUEST') {
        const list = decodePageRequest(m.body, s.pages);
        s.refRetried += list.length;
        for (const p of list) s.heard.requested.add(p);
      } else if (m.name === 'PROGRESS') s.heard.progress = m.body;
      else if (m.name === 'RESUMED') {
        s.heard.resumed = m.body;
        return s.notify();
      } else if (m.name === 'ERROR') {
        s.heard.refused = true;
        throw peerError(m.body, 'destination');
      }
      else throw new LivemigError('MIGRATE_PROTOCOL', `unexpected ${m.name} from the destination`);
      s.notify();
    }
  })().catch((e: Error) => {
    s.heard.failure ??= e;
    s.notify();
  });
}
