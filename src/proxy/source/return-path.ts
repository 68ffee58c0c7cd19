/**
 * What the destination proxy sends back, read all along after WELCOME: QEMU_ACK frees
 * kept pages (and may let QEMU's stream flow again), QEMU_REF_REQUEST is answered with
 * the pages in full, QEMU_DONE ends the migration, ERROR fails it with the peer's code.
 */
import { decodeQemuAck, decodeRefRequest, peerError } from '../../wire/index.ts';
import { sendRefData } from './send.ts';
import type { SourceProxySession } from './session.ts';
import { adjustFlow } from './flow.ts';

export async function returnPath(s: SourceProxySession): Promise<void> {
  const channel = s.channel!;
  channel.only(['QEMU_ACK', 'QEMU_REF_REQUEST', 'QEMU_DONE']);
  for (;;) {
    const m = await channel.read();
    s.stall.touch();
    switch (m.name) {
      case 'QEMU_ACK':
        s.kept.ack(decodeQemuAck(m.body));
        adjustFlow(s);
        break;
      case 'QEMU_REF_REQUEST':
        for (const [first, pages] of decodeRefRequest(m.body)) await sendRefData(s, first, pages);
        break;
      case 'QEMU_DONE':
        s.doneValue = m.body;
        s.done.resolve(m.body);
        return;
      case 'ERROR':
        throw peerError(m.body, 'destination proxy');
    }
  }
}
