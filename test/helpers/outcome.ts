/**
 * The two checks every failure test makes: the error a migration fails with, and the
 * source guest running on afterwards as if nothing had been tried.
 */
import assert from 'node:assert/strict';
import { LivemigError } from '../../src/errors.ts';
import type { Guest } from '../../src/guest/guest.ts';
import { waitFor } from './processes.ts';

/** For assert.rejects: a LivemigError with one of `codes` (a string or a list), and a message matching `message` if given. */
export const failsWith = (codes: string | readonly string[], message?: RegExp) => (e: unknown): boolean =>
  e instanceof LivemigError && (typeof codes === 'string' ? e.code === codes : codes.includes(e.code)) && (!message || message.test(e.message));

/** The source guest after a failed attempt: running, its disk attached, no throttle, and making progress. */
export async function assertRunsOn(g: Guest): Promise<void> {
  const s = await g.status();
  assert.equal(s.state, 'running', 'the source guest runs on');
  assert.notEqual(s.disk.description, 'detached', 'the disk is re-attached');
  assert.equal(s.throttle, 0, 'throttling is lifted');
  await waitFor(async () => (await g.status()).steps > s.steps + 5, 'the source guest to make progress');
}
