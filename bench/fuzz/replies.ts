/**
 * Followers of what a fuzzed target answers. The migration follower collects
 * the destination's ERROR codes (an unnamed failure, MIGRATE_FAILED, means an
 * exception nobody expected). The NBD follower counts the replies to requests,
 * following the haggling and the transmission phase as the plan describes them;
 * where it loses its way it stops counting.
 */
import type { SocketReader } from '../../nbd/socket-reader.ts';
import { OPTION_REPLY_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, OPT, REP, REPLY_FLAG_DONE, isErrorReply } from '../../nbd/constants.ts';
import { FRAME_BY_TYPE, FRAMES } from '../../src/wire/index.ts';
import type { NbdPlan } from './nbd-session.ts';

/** Reads the destination's frames and hands each ERROR body to onError. */
export function followMigration(onError: (code: string, message: string) => void) {
  return async (reader: SocketReader): Promise<void> => {
    for (;;) {
      const h = await reader.read(8);
      const type = h.readUInt16BE(0);
      const length = h.readUInt32BE(4);
      const spec = FRAME_BY_TYPE.get(type);
      if (!spec || length > spec.maxBytes) throw new Error(`the destination sent a frame of type ${type}, ${length} bytes`);
      const payload = await reader.read(length);
      if (type === FRAMES.ERROR.type) {
        const e = JSON.parse(payload.toString('utf8')) as { code: string; message: string };
        onError(e.code, e.message);
      }
    }
  };
}

/** Option replies until the option's last one; returns whether GO or EXPORT_NAME led into transmission. */
async function optionReplies(reader: SocketReader, opt: number): Promise<'continue' | 'transmission' | 'end'> {
  if (opt === OPT.EXPORT_NAME) {
    await reader.read(10); // size and flags (NO_ZEROES was asked for)
    return 'transmission';
  }
  for (;;) {
    const h = await reader.read(20);
    if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC || h.readUInt32BE(8) !== opt) throw new Error('lost in the option replies');
    const type = h.readUInt32BE(12);
    await reader.skip(h.readUInt32BE(16));
    if (type === REP.ACK) return opt === OPT.GO ? 'transmission' : opt === OPT.ABORT ? 'end' : 'continue';
    if (isErrorReply(type)) return 'continue';
  }
}

/** Counts the replies the server sends to a session's requests (a structured reply counts once, at its last chunk). */
export function followNbd(plan: NbdPlan, count: (replies: number) => void) {
  return async (reader: SocketReader): Promise<void> => {
    await reader.read(18); // greeting
    if (plan.options.includes(-1)) return;
    let phase: 'continue' | 'transmission' | 'end' = 'continue';
    for (const opt of plan.options) {
      phase = await optionReplies(reader, opt);
      if (phase !== 'continue') break;
    }
    if (phase !== 'transmission') return;
    for (;;) {
      const magic = (await reader.read(4)).readUInt32BE(0);
      if (magic === SIMPLE_REPLY_MAGIC) {
        const r = await reader.read(12);
        const handle = Number(r.readBigUInt64BE(4));
        const read = plan.reads.get(handle);
        if (r.readUInt32BE(0) === 0 && read !== undefined) await reader.skip(read);
        count(1);
      } else if (magic === STRUCTURED_REPLY_MAGIC) {
        const r = await reader.read(16);
        await reader.skip(r.readUInt32BE(12));
        if (r.readUInt16BE(0) & REPLY_FLAG_DONE) count(1);
      } else throw new Error(`reply magic 0x${magic.toString(16)}`);
    }
  };
}
