/**
 * The destination proxy's main phase: frames from the source become QEMU's stream
 * again. BYTES go to the output as they are, each REF_RUN becomes a run waiting in the
 * output and a reference in the fetch queue; QEMU_REF_DATA fills pages whose check
 * failed. Every ACK_MS the written referenced pages are acknowledged and the fetch
 * queue checked for a storage failure. Resolves once QEMU_END came and all went out.
 */
import { LivemigError } from '../../errors.ts';
import { QEMU_ENTRY, decodeQemuStream, decodeRefData, peerError, type QemuEntry } from '../../wire/index.ts';
import { RefRun } from './ref-run.ts';
import type { DestinationProxySession } from './session.ts';

const ACK_MS = 20;

function onEntry(s: DestinationProxySession, e: QemuEntry): void {
  const output = s.output!;
  if (e.kind === QEMU_ENTRY.BYTES) return output.bytes(e.data);
  if (!s.storageMatch.sameSize) throw new LivemigError('MIGRATE_PROTOCOL', 'a reference, though this side\'s disk has another size');
  const run = new RefRun(s.slots!.received, e.count, e.offset, output.runBuffer(e.count));
  s.slots!.add(run);
  output.run(run);
  s.fetch!.add(run.first, e.block, e.hash, 1, e.count);
}

function checkComplete(s: DestinationProxySession): void {
  if (!s.end || s.complete.settled) return;
  if (s.qemuGone) {
    // QEMU closed once it had every byte handed to it: whole only if those were all of the stream.
    if (s.end.streamBytes === s.output!.written && s.output!.handedAll) s.complete.resolve();
    else s.fail(s.qemuGone);
  } else if (s.output!.idle) s.complete.resolve();
}

async function readFrames(s: DestinationProxySession): Promise<void> {
  const channel = s.channel!;
  for (;;) {
    await s.output!.room();
    const m = await channel.read();
    s.stall.touch();
    if (m.name === 'QEMU_STREAM') {
      if (s.end) throw new LivemigError('MIGRATE_PROTOCOL', 'QEMU_STREAM after QEMU_END');
      if (s.qemuGone) throw s.qemuGone; // more stream, and no QEMU to take it
      decodeQemuStream(m.body, s.diskBlocks, (e) => onEntry(s, e));
    } else if (m.name === 'QEMU_REF_DATA') {
      const { first, pages, data } = decodeRefData(m.body);
      s.slots!.fillFromSource(first, pages, data);
    } else if (m.name === 'QEMU_END') {
      s.end = m.body;
    } else if (m.name === 'ERROR') {
      throw peerError(m.body, 'source proxy');
    }
    s.output!.pump();
    checkComplete(s);
  }
}

/** QEMU must keep its socket open until the stream is whole: closing early means it died or refused the stream. */
function watchQemu(s: DestinationProxySession): void {
  const qemu = s.qemu!;
  const gone = (why: string) => () => {
    s.qemuClosed = true;
    if (s.complete.settled || s.qemuGone) return;
    const e = new LivemigError('QEMU_PROXY_QEMU_CLOSED', `the destination QEMU ${why} after ${s.output!.written} bytes of its stream (it died, or refused the stream)`);
    // With nothing left to hand it, QEMU may have loaded the whole stream before QEMU_END came: QEMU_END decides.
    if (!s.end && s.output!.handedAll && !why.startsWith('broke')) s.qemuGone = e;
    else s.fail(e);
  };
  qemu.on('data', () => {}); // QEMU sends nothing here; reading lets its close be seen
  qemu.on('error', (e: NodeJS.ErrnoException) => gone(`broke its migration socket (${e.code ?? e.message})`)());
  qemu.on('close', gone('closed its migration socket'));
}

function tick(s: DestinationProxySession): void {
  s.sendAck();
  const f = s.fetch!;
  if (f.error) s.fail(new LivemigError('MIGRATE_STORAGE', `cannot read the guest's disk ${s.opts.disk}: ${f.error.message}`));
  s.backlog.max = Math.max(s.backlog.max, f.backlog);
  s.backlog.sum += f.backlog;
  s.backlog.samples++;
  if (s.output!.written !== s.lastWritten) s.stall.touch();
  s.lastWritten = s.output!.written;
}

export async function receive(s: DestinationProxySession): Promise<void> {
  s.channel!.only(['QEMU_STREAM', 'QEMU_REF_DATA', 'QEMU_END']);
  s.output!.onIdle = () => checkComplete(s);
  watchQemu(s);
  const timer = setInterval(() => tick(s), ACK_MS);
  readFrames(s).catch((e) => s.complete.settled || s.fail(e));
  try {
    await Promise.race([s.complete.promise, s.failed.promise]);
  } finally {
    clearInterval(timer);
  }
  s.sendAck();
}
