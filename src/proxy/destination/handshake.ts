/**
 * The destination proxy's handshake: HELLO within its time limit, from a QEMU stream
 * proxy (qemu-stream listed, a stream of QEMU's format); the disk is this side's own
 * --disk, sampled to learn whether both see the same bytes; QEMU's -incoming socket
 * is connected only then (QEMU takes one migration), and WELCOME sent.
 */
import { LivemigError } from '../../errors.ts';
import { FetchQueue, FETCH_DEFAULTS } from '../../migrate/fetch-queue.ts';
import { openBackend } from '../../storage/open.ts';
import { CAPABILITY, PAGE_SIZE, peerError, type Channel, type Welcome, QEMU_PROXY_CAPABILITIES, QEMU_STREAM_FORMAT, TIMEOUT, chooseVersion, migrationKey, encodeQemuAck, encodeRefRequest, type Hello } from '../../wire/index.ts';
import { connectTo, formatEndpoint } from '../endpoint.ts';
import { checkStorage, welcomeStorage } from '../../migrate/storage-identity.ts';
import { QemuOutput } from './output.ts';
import { RefSlots } from './ref-slots.ts';
import type { DestinationProxySession } from './session.ts';

/** Stream bytes written to QEMU between two QEMU_ACKs at most (besides the timer's). */
const ACK_EVERY = 1 << 20;

function checkHello(hello: Hello): void {
  if (!hello.capabilities.includes(CAPABILITY.QEMU_STREAM) || !hello.stream) {
    throw new LivemigError('MIGRATE_CAPABILITY', 'the source is not a QEMU stream proxy (no qemu-stream capability): this destination only feeds a QEMU');
  }
  const missing = QEMU_PROXY_CAPABILITIES.filter((c) => !hello.capabilities.includes(c));
  if (missing.length) throw new LivemigError('MIGRATE_CAPABILITY', `the source proxy lacks ${missing.join(', ')}`);
  if (hello.stream.format !== QEMU_STREAM_FORMAT) throw new LivemigError('MIGRATE_CAPABILITY', `QEMU stream format ${hello.stream.format} is not carried (only ${QEMU_STREAM_FORMAT})`);
}

async function openDisk(s: DestinationProxySession, key: Buffer): Promise<void> {
  s.storage = await openBackend(s.opts.disk, { readOnly: true, lock: false }).catch((e: Error) => {
    throw new LivemigError('MIGRATE_STORAGE', `cannot open the guest's disk ${s.opts.disk} on the destination: ${e.message}`);
  });
  s.diskBlocks = Math.floor(s.storage.size / PAGE_SIZE);
  s.storageMatch = await checkStorage(s.storage, key, s.hello.storage);
}

/** Output, fetch target and fetch queue, wired to QEMU's socket and the return path. */
function wire(s: DestinationProxySession): void {
  const output = (s.output = new QemuOutput(s.qemu!, s.opts.windowBytes));
  const send = (name: 'QEMU_REF_REQUEST' | 'QEMU_ACK', body: Buffer) => s.channel!.send({ name, body }).catch((e) => s.fail(e));
  s.slots = new RefSlots(() => output.pump(), (ranges) => void send('QEMU_REF_REQUEST', encodeRefRequest(ranges)));
  output.owed = () => s.slots!.owed > 0;
  output.onRunWritten = () => s.slots!.written();
  s.fetch = new FetchQueue(s.storage!, s.hasher, s.slots, { ...FETCH_DEFAULTS, inOrder: true }); // QEMU takes the pages in stream order
  s.sendAck = () => {
    if (output.refPagesWritten === s.acked && output.written === s.ackedStream) return;
    [s.acked, s.ackedStream] = [output.refPagesWritten, output.written];
    void send('QEMU_ACK', encodeQemuAck({ refPages: s.acked, streamBytes: s.ackedStream }));
  };
  // The source's window moves with these: acknowledge every ACK_EVERY bytes, not only on the timer.
  output.onWritten = () => output.written - s.ackedStream >= ACK_EVERY && s.sendAck();
}

/** A source proxy that failed while this side prepared has sent ERROR and gone: its reason, not "link closed", is the failure. */
async function sendWelcome(channel: Channel, body: Welcome): Promise<void> {
  try {
    await channel.send({ name: 'WELCOME', body });
  } catch (err) {
    const said = await channel.read().catch(() => null);
    throw said?.name === 'ERROR' ? peerError(said.body, 'source proxy') : err;
  }
}

export async function handshake(s: DestinationProxySession): Promise<void> {
  const channel = s.channel!;
  channel.only(['HELLO']);
  const hello = await channel.expect('HELLO', TIMEOUT.HELLO, 'source proxy');
  const version = chooseVersion(hello);
  checkHello(hello);
  s.hello = hello;
  const key = migrationKey(s.linkKey, hello);
  s.hasher.setKey(key);
  await openDisk(s, key);
  s.qemu = await connectTo(s.opts.to, TIMEOUT.CONNECT, 'QEMU_PROXY_QEMU_UNREACHABLE', `the destination QEMU (-incoming ${formatEndpoint(s.opts.to)})`);
  wire(s);
  const m = s.storageMatch;
  await sendWelcome(channel, { version, capabilities: [...QEMU_PROXY_CAPABILITIES], ...welcomeStorage(m) });
  s.log.info({ version, storageMatch: m.match, storageReason: m.reason, ramBlocks: hello.stream!.ramBlocks.length }, 'welcome sent');
}
