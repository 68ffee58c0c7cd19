/**
 * SVG charts for benchmark reports, rendered in Node by Vega-Lite and Vega
 * (renderer 'none': no browser, no canvas). Vega-Lite because a chart is a small
 * declarative spec, its axes and legends come out right without hand-placed
 * coordinates, and it is actively maintained; the SVG is static and diffs cleanly.
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export type Row = Record<string, string | number>;

const CONFIG = { font: 'Helvetica, Arial, sans-serif', view: { stroke: null }, axis: { labelFontSize: 11, titleFontSize: 12 } };

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile({ ...spec, config: { ...CONFIG, ...(spec.config ?? {}) } } as TopLevelSpec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Grouped bars: one group per `x`, one bar per `color`, optional facet columns. */
export function groupedBars(o: { title: string; rows: Row[]; x: string; y: string; yTitle: string; color: string; column?: string }): TopLevelSpec {
  return {
    title: o.title,
    data: { values: o.rows },
    mark: { type: 'bar', tooltip: true },
    encoding: {
      ...(o.column ? { column: { field: o.column, type: 'nominal', title: null } } : {}),
      x: { field: o.x, type: 'nominal', title: null, axis: { labelAngle: 0 } },
      xOffset: { field: o.color, type: 'nominal' },
      y: { field: o.y, type: 'quantitative', title: o.yTitle },
      color: { field: o.color, type: 'nominal', title: null, scale: { scheme: 'tableau10' } },
    },
    width: { step: 28 },
    height: 220,
  } as TopLevelSpec;
}

/** Lines over rounds (or any ordinal x), one per `color`, faceted by `row` if given. */
export function lines(o: { title: string; rows: Row[]; x: string; xTitle: string; y: string; yTitle: string; color: string; column?: string; logY?: boolean }): TopLevelSpec {
  return {
    title: o.title,
    data: { values: o.rows },
    mark: { type: 'line', point: true, tooltip: true },
    encoding: {
      ...(o.column ? { column: { field: o.column, type: 'nominal', title: null } } : {}),
      x: { field: o.x, type: 'quantitative', title: o.xTitle },
      y: { field: o.y, type: 'quantitative', title: o.yTitle, ...(o.logY ? { scale: { type: 'symlog' } } : {}) },
      color: { field: o.color, type: 'nominal', title: null, scale: { scheme: 'tableau10' } },
    },
    width: 220,
    height: 180,
  } as TopLevelSpec;
}
