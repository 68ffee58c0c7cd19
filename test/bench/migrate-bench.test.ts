/** `npm run bench -- migrate --quick`, as someone checking a change runs it: every run verified, a full report. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { run, tempDir, REPO } from '../helpers/processes.ts';
import { requireTools } from '../helpers/tools.ts';

const dir = tempDir();
after(() => dir.cleanup());

test('the quick migration benchmark runs, verifies every migration and writes JSON, Markdown and SVG charts', async (t) => {
  if (!requireTools(t, 'nbdcopy')) return;
  const t0 = performance.now();
  const r = await run(process.execPath, [join(REPO, 'node_modules/tsx/dist/cli.mjs'), join(REPO, 'bench/run.ts'), 'migrate', '--quick', '--out', dir.path, '--json'], { timeoutMs: 900_000 });
  // Tests check behaviour, not time: the bound only stops a hang. --quick's 3 minutes on a quiet machine is printed, not asserted.
  t.diagnostic(`bench migrate --quick took ${Math.round((performance.now() - t0) / 1000)} s`);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { path: string; report: string; goals: Record<string, { value: number }> };
  for (const g of ['pagecache: link bytes p2b / baseline', 'pagecache: total time p2b / baseline', 'pagecache: total time auto / baseline at 1.00 Gbit/s', 'engine stream / raw Node TCP socket', 'fetch queue storage reads / nbdcopy']) {
    assert.ok(out.goals[g] && out.goals[g].value > 0, `goal ${g} measured`);
  }
  const raw = JSON.parse(readFileSync(out.path, 'utf8')) as { runs: Record<string, { verified: boolean; destinationRunning: boolean; cpu: { sourceMs: number }; efficiency: number; pages: { ref: number }; strategy: string }[]>; machine: object };
  const runs = Object.values(raw.runs).flat();
  assert.equal(runs.length, 6, 'pagecache x {auto, baseline, p2b} x 2 repeats');
  assert.ok(runs.some((m) => m.strategy === 'auto'), 'the default strategy is named auto');
  for (const m of runs) {
    assert.ok(m.verified && m.destinationRunning, 'verified and running');
    assert.ok(m.cpu.sourceMs > 0 && m.efficiency > 0);
    if (m.strategy === 'p2b') assert.ok(m.pages.ref > 0, 'p2b sent references');
  }
  const md = readFileSync(out.report, 'utf8');
  assert.match(md, /## p2b against baseline/);
  assert.match(md, /\| pagecache \|/);
  const chartDir = join(dir.path, readdirSync(dir.path).find((f) => f.endsWith('-charts'))!);
  assert.deepEqual(readdirSync(chartDir).sort(), ['efficiency.svg', 'link-bytes.svg', 'rounds.svg', 'time.svg']);
  for (const f of readdirSync(chartDir)) assert.match(readFileSync(join(chartDir, f), 'utf8'), /^<svg[^>]*>.*baseline.*p2b/s, `${f} is an SVG with both strategies`);
});
