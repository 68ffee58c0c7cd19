/** The emulated guest's binary device state: it round-trips, and bytes from another host cannot make it misbehave. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeDeviceState, encodeDeviceState } from '../../src/guest/device-state.ts';
import type { DeviceState } from '../../src/guest/messages.ts';

const PAGES = 64;
const state = (): DeviceState => ({
  version: 2, workload: 'pagecache', options: { seed: 3 }, rng: [1, 2, 3, 4], workloadState: { phase: 'steady', steps: 9 },
  os: {
    owner: Uint8Array.from({ length: PAGES }, (_, i) => i % 3),
    free: Uint32Array.from([63, 62, 61]),
    anon: Uint32Array.from([1, 4, 7]),
    cache: Uint32Array.from([5, 100, 1, 2, 2, 3, 9, 200, 0, 1, 5]),
  },
});

const code = (re: RegExp) => (e: unknown) => (e as { code?: string }).code === 'GUEST_DEVICE_STATE' && re.test((e as Error).message);

test('a device state round-trips through its bytes, tables and header alike', () => {
  const d = state();
  assert.deepEqual(decodeDeviceState(encodeDeviceState(d), PAGES), d);
  // At an odd offset in a bigger buffer, as it arrives inside a frame.
  const b = encodeDeviceState(d);
  const framed = Buffer.concat([Buffer.alloc(3), b]).subarray(3);
  assert.deepEqual(decodeDeviceState(framed, PAGES), d);
});

test('a device state that is not one, of another version or of another size is GUEST_DEVICE_STATE', () => {
  assert.throws(() => decodeDeviceState(Buffer.from('{"version": 1}'), PAGES), code(/not a livemig device state/));
  const b = encodeDeviceState(state());
  const v3 = Buffer.from(b);
  v3.writeUInt32LE(3, 4);
  assert.throws(() => decodeDeviceState(v3, PAGES), code(/version 3 is not 2/));
  assert.throws(() => decodeDeviceState(b, PAGES * 2), code(/for 64 pages, this guest has 128/));
  assert.throws(() => decodeDeviceState(b.subarray(0, b.length - 4), PAGES), code(/does not fit|ends early/));
  assert.throws(() => decodeDeviceState(Buffer.concat([b, Buffer.alloc(4)]), PAGES), code(/left over/));
});

test('counts from another host never decide an allocation, and every page number stays inside the guest', () => {
  const huge = encodeDeviceState(state());
  // The free count, right after the owner table: 2^32 - 1 entries would be 16 GiB.
  const at = 12 + huge.readUInt32LE(8) + 4 + PAGES;
  huge.writeUInt32LE(0xffffffff, at + ((4 - (at % 4)) % 4));
  assert.throws(() => decodeDeviceState(huge, PAGES), code(/does not fit/));
  const outside = state();
  outside.os.anon[1] = PAGES;
  assert.throws(() => decodeDeviceState(encodeDeviceState(outside), PAGES), code(/page 64 is outside/));
  const overrun = state();
  overrun.os.cache[3] = 50; // the first extent claims more pages than the table holds
  assert.throws(() => decodeDeviceState(encodeDeviceState(overrun), PAGES), code(/overruns/));
});
