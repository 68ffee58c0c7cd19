/**
 * QEMU's stream through the source proxy: bytes from QEMU's socket go to the batcher;
 * once the stream has declared its RAM blocks the handshake starts; each sealed batch
 * is classified (lookups, hashes) at once, many in flight, and sent in order. Resolves
 * when QEMU closed a whole stream and every batch is on the link.
 */
import { LivemigError } from '../../errors.ts';
import { QemuStreamError, type QemuRecord } from '../../qemu/stream/index.ts';
import type { Batch } from './batch.ts';
import { classify } from './classify.ts';
import { adjustFlow } from './flow.ts';
import { handshake } from './handshake.ts';
import { returnPath } from './return-path.ts';
import { sendBatch } from './send.ts';
import type { SourceProxySession } from './session.ts';

/** Setup records: the machine, the RAM blocks; the first EOS ends the block list, so the handshake can start. */
export function onRecord(s: SourceProxySession, r: QemuRecord): void {
  if (r.kind === 'ram-zero') s.counts.zero++;
  else if (r.kind === 'configuration') s.machine = r.machine;
  else if (r.kind === 'ram-block') s.ramBlocks.push({ id: r.block, bytes: r.usedLength });
  else if (r.kind === 'ram-eos' && !s.handshakeStarted) startHandshake(s);
}

function startHandshake(s: SourceProxySession): void {
  s.handshakeStarted = true;
  handshake(s).then(
    () => {
      if (s.failure) return;
      s.handshaken.resolve();
      returnPath(s).catch((e) => s.fail(e));
    },
    (e) => s.fail(e),
  );
}

export function onSealed(s: SourceProxySession, b: Batch): void {
  s.pending++;
  adjustFlow(s);
  b.ready = classify(s, b);
  b.ready.catch(() => {}); // its failure surfaces through the send chain
  s.sending = s.sending.then(async () => {
    await b.ready;
    await s.handshaken.promise;
    await sendBatch(s, b);
    s.pending--;
    adjustFlow(s);
  });
  s.sending.catch((e) => s.fail(e));
}

/** A stream QEMU cut short says so in one line: the source QEMU most likely died or cancelled. */
function ended(s: SourceProxySession, err: unknown): Error {
  if (err instanceof QemuStreamError && err.code === 'QEMU_STREAM_TRUNCATED') {
    return new LivemigError('QEMU_STREAM_TRUNCATED', `the source QEMU closed its migration stream before its end (it died, or the migration was cancelled): ${err.message}`);
  }
  return err as Error;
}

export async function stream(s: SourceProxySession): Promise<void> {
  const qemu = s.qemu!;
  const closed = new Promise<void>((resolve) => {
    let over = false;
    const finish = () => {
      if (over) return;
      over = true;
      try {
        s.batcher.end();
        s.streamEnded = true;
        resolve();
      } catch (err) {
        s.fail(ended(s, err));
      }
    };
    qemu.on('data', (chunk: Buffer) => {
      try {
        s.batcher.push(chunk);
        s.stall.touch();
      } catch (err) {
        s.fail(err);
      }
    });
    qemu.on('end', finish);
    qemu.on('close', finish);
    qemu.on('error', () => {}); // 'close' follows
  });
  await Promise.race([closed, s.failed.promise]);
  await Promise.race([s.sending, s.failed.promise]);
}
