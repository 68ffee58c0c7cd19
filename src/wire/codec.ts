/**
 * Messages as the engine handles them, and their payloads on the wire. A message
 * is a frame name and a body whose type that name fixes, so an invalid frame cannot
 * be built; binary bodies are made by the codecs in pages.ts. Decoding validates
 * every JSON payload (messages.ts) before anything acts on it.
 */
import { LivemigError } from '../errors.ts';
import { FRAMES, FRAME_BY_TYPE, type FrameName } from './protocol.ts';
import {
  asComplete, asDigests, asError, asHello, asProgress, asQemuDone, asQemuEnd, asResumed, asWelcome,
  type Complete, type Digests, type ErrorBody, type Hello, type Progress, type QemuDone, type QemuEnd, type Resumed, type Welcome,
} from './messages.ts';

interface Bodies {
  HELLO: Hello;
  WELCOME: Welcome;
  PAGES: Buffer;
  DEVICE_STATE: Buffer;
  COMPLETE: Complete;
  RESUMED: Resumed;
  ERROR: ErrorBody;
  PAGE_REQUEST: Buffer;
  PROGRESS: Progress;
  DIGESTS: Digests;
  MAP: Buffer;
  QEMU_STREAM: Buffer;
  QEMU_END: QemuEnd;
  QEMU_ACK: Buffer;
  QEMU_REF_REQUEST: Buffer;
  QEMU_REF_DATA: Buffer;
  QEMU_DONE: QemuDone;
}

export type Message = { [K in FrameName]: { name: K; body: Bodies[K] } }[FrameName];
export type MessageOf<K extends FrameName> = Extract<Message, { name: K }>;

type JsonFrame = { [K in FrameName]: (typeof FRAMES)[K]['body'] extends 'json' ? K : never }[FrameName];
const DECODE_JSON: { [K in JsonFrame]: (v: unknown) => Bodies[K] } = {
  HELLO: asHello,
  WELCOME: asWelcome,
  COMPLETE: asComplete,
  RESUMED: asResumed,
  ERROR: asError,
  PROGRESS: asProgress,
  DIGESTS: asDigests,
  QEMU_END: asQemuEnd,
  QEMU_DONE: asQemuDone,
};

/** The payload bytes of a message. */
export function encodePayload(m: Message): Buffer {
  return Buffer.isBuffer(m.body) ? m.body : Buffer.from(JSON.stringify(m.body));
}

/** A frame's payload as a message; the frame type is known (the channel checked it). */
export function decodePayload(type: number, payload: Buffer): Message {
  const spec = FRAME_BY_TYPE.get(type)!;
  const name = spec.name as FrameName;
  if (spec.body === 'binary') return { name, body: payload } as Message;
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new LivemigError('MIGRATE_PROTOCOL', `${name} payload is not valid JSON`);
  }
  const decode = DECODE_JSON[name as JsonFrame] as (v: unknown) => unknown;
  return { name, body: decode(value) } as Message;
}
