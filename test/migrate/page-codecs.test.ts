/**
 * Migrations with the page codecs, every one checked by the oracle: XBZRLE
 * deltas and LZ4 pages on a compressible heap written in part, counted on the
 * wire; a destination that does not list them gets whole pages; on a heap of
 * random whole-page writes XBZRLE stops itself.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { CAPABILITIES, CAPABILITY } from '../../src/wire/index.ts';
import { tempDir } from '../helpers/processes.ts';
import { useSharedDisks } from '../helpers/shared-disks.ts';
import { startWarmGuest, migrateGuest } from '../helpers/migration.ts';
import { startFrameTap } from '../helpers/frame-tap.ts';
import type { Strategy } from '../../src/migrate/result.ts';
import type { MigrateGuestOptions } from '../helpers/migration.ts';

const MiB = 1024 * 1024;
const dir = tempDir();
const disks = useSharedDisks(dir.path, 96 * MiB);
after(() => dir.cleanup());

const compressible = { heap: 'compressible' as const, writeSize: 256, dirtyRate: 8 * MiB };
/** A link slow enough that it, not the CPU, limits the sender even on a loaded machine (so LZ4 pays), and rounds that must iterate. */
const slowLink = { maxBandwidth: 8 * MiB, downtimeLimitMs: 100 };

async function migrateTapped(name: string, strategy: Strategy, options: object, extra: MigrateGuestOptions) {
  const g = await startWarmGuest(dir.path, name, disks.ours(), 'dirty', 32 * MiB, options);
  let tap: Awaited<ReturnType<typeof startFrameTap>> | undefined;
  const m = await migrateGuest(dir.path, g, strategy, { ...extra, via: async (port) => (tap = await startFrameTap(port)).port });
  tap!.close();
  return { m, counts: tap!.counts };
}

for (const [strategy, compress] of [['baseline', 'auto'], ['p2b', 'always']] as const) {
  test(`dirty, compressible heap, 256-byte writes, ${strategy}, compress ${compress}: XBZRLE and LZ4 pages on the wire, memories equal`, { timeout: 120_000 }, async () => {
    const { m, counts } = await migrateTapped(`codecs-${strategy}`, strategy, compressible, { ...slowLink, compress });
    try {
      assert.equal(m.oracle.equal, true, 'the oracle finds both memories equal');
      assert.equal(m.result.verified, true);
      const { entries } = counts;
      assert.equal(entries.get('XBZRLE') ?? 0, m.result.pages.xbzrle, 'the deltas on the wire are the ones the source reports');
      assert.equal(entries.get('LZ4') ?? 0, m.result.pages.lz4);
      assert.ok(m.result.pages.xbzrle > 100, `re-sent pages went as deltas (${m.result.pages.xbzrle})`);
      assert.ok(m.result.pages.lz4 > 1000, `full pages went compressed on a slow link (${m.result.pages.lz4})`);
      assert.equal(m.result.codecs.xbzrleOff, null, 'XBZRLE paid, so it stayed on');
      assert.ok(m.result.codecs.savedBytes > 8 * MiB, `${m.result.codecs.savedBytes} bytes kept off the link`);
    } finally {
      await m.destination.stop();
    }
  });
}

test('a destination that lists neither pages.lz4 nor pages.xbzrle gets whole pages only, memories equal', { timeout: 120_000 }, async () => {
  const capabilities = CAPABILITIES.filter((c) => c !== CAPABILITY.LZ4 && c !== CAPABILITY.XBZRLE);
  const { m, counts } = await migrateTapped('codecs-old-peer', 'baseline', compressible, { ...slowLink, incoming: { capabilities } });
  try {
    assert.equal(m.oracle.equal, true);
    assert.equal(counts.entries.get('LZ4') ?? 0, 0);
    assert.equal(counts.entries.get('XBZRLE') ?? 0, 0);
    assert.ok((counts.entries.get('FULL') ?? 0) > 4000);
    assert.match(m.result.codecs.xbzrleOff ?? '', /not negotiated/);
  } finally {
    await m.destination.stop();
  }
});

test('--compress off and --xbzrle-cache 0 send whole pages to a destination that speaks both', { timeout: 120_000 }, async () => {
  const { m, counts } = await migrateTapped('codecs-off', 'baseline', compressible, { ...slowLink, compress: 'off', xbzrleCacheBytes: 0 });
  try {
    assert.equal(m.oracle.equal, true);
    assert.equal((counts.entries.get('LZ4') ?? 0) + (counts.entries.get('XBZRLE') ?? 0), 0);
  } finally {
    await m.destination.stop();
  }
});

test('dirty as before (random whole pages): XBZRLE stops itself after a round of no savings, memories equal', { timeout: 120_000 }, async () => {
  const { m, counts } = await migrateTapped('codecs-random', 'p2b', { dirtyRate: 16 * MiB }, { maxBandwidth: 24 * MiB, downtimeLimitMs: 30 });
  try {
    assert.equal(m.oracle.equal, true);
    assert.equal(m.result.verified, true);
    assert.ok(m.result.rounds >= 3, `${m.result.rounds} rounds`);
    assert.match(m.result.codecs.xbzrleOff ?? '', /saved under/, 'XBZRLE gave up');
    // Deltas that did go are pages dirtied again without changing since they were sent (a write raced the copy).
    assert.equal(counts.entries.get('XBZRLE') ?? 0, m.result.pages.xbzrle);
  } finally {
    await m.destination.stop();
  }
});
