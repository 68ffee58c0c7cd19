/**
 * What the destination proxy sends back, read all along after WELCOME: QEMU_ACK frees
 * kept pages (and may let QEMU's stream flow again), QEMU_REF_REQUEST is answered with
 * the pages in full, QEMU_DONE ends the migration, ERROR fails it with the peer's code.
 */
import { LivemigError } from '../../errors.ts';
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
      case 'QEMU_ACK': {
        const ack = decodeQemuAck(m.body);
        s.kept.ack(ack.refPages);
        if (ack.streamBytes < s.streamAcked || ack.streamBytes > s.streamBytes) {
          throw new LivemigError('MIGRATE_PROTOCOL', `QEMU_ACK of ${ack.streamBytes} stream bytes, with ${s.streamAcked} acknowledged and ${s.streamBytes} read from QEMU`);
        }
        s.streamAcked = ack.streamBytes;
        adjustFlow(s);
        break;
      }
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
