/**
 * The auto strategy's rule (src/migrate/source/ref-policy.ts) on its own figures:
 * a mapped page goes as a reference only while the destination's reads finish no
 * later than the link would, and a fetch backlog turns references off.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinkMeter, RefPolicy, STORAGE_HEADROOM, type PolicyInputs } from '../../src/migrate/source/ref-policy.ts';

const MB = 1e6;
const PAGE = 4096;

/**
 * A round of `pages` pages, the first `mapped` of them mapped, on a simulated clock:
 * unmapped pages and mapped ones sent in full take the link's time, references are
 * read by the storage meanwhile (the destination's PROGRESS sees the backlog at once).
 */
function setup(o: { pages: number; mapped: number; link: number; storage: number; pending?: number }) {
  const progress = { readRate: o.storage, pending: o.pending ?? 0, refsReceived: 0 };
  let refs = 0;
  const inputs: PolicyInputs = { referenceable: (p) => p < o.mapped, maxBandwidth: o.link, progress: () => progress, refsSent: () => refs };
  const policy = new RefPolicy(inputs, new LinkMeter());
  policy.startRound(Uint32Array.from({ length: o.pages }, (_, i) => i));
  /** Sends the round (mapped pages first, one-page runs); returns the references and when link and storage finish. */
  const round = () => {
    let linkS = 0;
    let storageWork = (o.pending ?? 0) * PAGE; // bytes the storage owes
    let storageS = 0;
    const advance = (dt: number) => {
      linkS += dt;
      const read = Math.min(storageWork, dt * o.storage);
      storageWork -= read;
      storageS += read / o.storage;
      progress.pending = Math.ceil(storageWork / PAGE);
      progress.refsReceived = refs;
    };
    for (let p = 0; p < o.pages; p++) {
      if (p < o.mapped && policy.takeRun(1)) {
        refs++;
        storageWork += PAGE;
        advance(36 / o.link);
      } else {
        if (p >= o.mapped) policy.sentOther();
        advance(PAGE / o.link);
      }
    }
    return { refs, linkS, storageS: storageS + storageWork / o.storage };
  };
  return { policy, round, progress };
}

/** The best finish for a round: the mapped pages split so that link and storage end together (no backlog), the storage planned at its headroom. */
const best = (pages: number, mapped: number, link: number, storage: number) => {
  const refs = Math.min(mapped, (pages * PAGE) / link / (PAGE / link + PAGE / storage));
  return Math.max(((pages - refs) * PAGE) / link, (refs * PAGE) / storage);
};

test('a slow link and fast storage: every mapped page goes as a reference', () => {
  const { round } = setup({ pages: 1000, mapped: 800, link: 10 * MB, storage: 1000 * MB });
  assert.equal(round().refs, 800);
});

for (const [name, link, storage, mapped] of [['a fast link and slow storage', 900 * MB, 100 * MB, 1000], ['equal rates', 100 * MB, 100 * MB, 600], ['a slow link and slower storage', 50 * MB, 20 * MB, 900]] as const) {
  test(`${name}: the round ends within 10 % of the best split of link and storage work (storage planned at its headroom)`, () => {
    const { round } = setup({ pages: 1000, mapped, link, storage });
    const r = round();
    const finish = Math.max(r.linkS, r.storageS);
    const ideal = best(1000, mapped, link, storage * STORAGE_HEADROOM);
    assert.ok(finish <= ideal * 1.1, `${r.refs} references: finishes at ${(finish * 1000).toFixed(2)} ms, best ${(ideal * 1000).toFixed(2)} ms`);
    assert.ok(finish < (1000 * PAGE) / link, 'sooner than sending every page in full');
  });
}

test('a fetch backlog the storage cannot clear before the link is done turns references off', () => {
  const { round } = setup({ pages: 1000, mapped: 1000, link: 100 * MB, storage: 100 * MB, pending: 5000 });
  assert.equal(round().refs, 0);
});

test('before the destination has measured its reads, references go only while its backlog is small', () => {
  const { policy, progress } = setup({ pages: 10_000, mapped: 10_000, link: 100 * MB, storage: 0 });
  assert.equal(policy.takeRun(1), true);
  progress.pending = 5000;
  assert.equal(policy.takeRun(1), false, 'unmeasured storage with 5000 pages unread');
});

test('the link meter trusts only several timed frames, and measures capacity, not use', () => {
  const m = new LinkMeter();
  m.record(1 * MB, 10);
  assert.equal(m.rate(), 0, 'one frame is not enough');
  for (let i = 0; i < 9; i++) m.record(1 * MB, 10);
  assert.equal(Math.round(m.rate()), 100 * MB);
});
