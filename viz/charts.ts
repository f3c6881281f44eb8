/**
 * flowgpu/viz/charts: publication charts as SVG through Vega-Lite (rendered headless by Vega,
 * no permissions, no browser), PNG from that SVG through `sharp` (libvips, shipped inside its
 * npm package) where a raster is wanted, and labelled image grids (nearest-neighbour upscaled,
 * class names on the rows). The core `mod.ts` never imports this module.
 *
 * Importing needs no permissions; {@linkcode svgToPng} loads sharp on first use, which needs
 * `--allow-ffi`/`--allow-read` on Deno's npm cache, `--allow-env` for sharp's variables and
 * `--allow-sys=cpus,osRelease,networkInterfaces,homedir,uid,gid,hostname`.
 *
 * @example
 * ```ts
 * import { lineChart } from "./charts.ts";
 * import { strict as assert } from "node:assert";
 * const svg = await lineChart([{ name: "Loss", x: [1, 2, 3], y: [1, 0.5, 0.2] }], {
 *   title: "Training loss", xTitle: "Step", yTitle: "Loss", logY: true,
 * });
 * assert.ok(svg.startsWith("<svg") && svg.includes("Training loss"));
 * ```
 * @module
 */
// Full npm: specifiers (not bare names from deno.json) so this module also imports by URL.
// deno-lint-ignore no-import-prefix
import * as vega from "npm:vega@6.4.0";
// deno-lint-ignore no-import-prefix
import { compile, type TopLevelSpec } from "npm:vega-lite@6.5.0";
import type { RgbaImage } from "../lib/formats/png.ts";
export type { RgbaImage };
export { type LabelledGridOptions, labelledGridSvg, upscaleNearest } from "./grid.ts";

/**
 * A Vega-Lite specification (a plain JSON object; see the Vega-Lite documentation). Typed
 * loosely here so this module's public types do not drag in vega-lite's internal ones.
 */
export type VegaLiteSpec = { [key: string]: unknown };

/**
 * Render a Vega-Lite specification to an SVG document string (headless, no permissions).
 *
 * @example
 * ```ts
 * import { vegaLiteToSvg } from "./charts.ts";
 * import { strict as assert } from "node:assert";
 * const svg = await vegaLiteToSvg({
 *   data: { values: [{ a: "x", b: 1 }, { a: "y", b: 2 }] },
 *   mark: "bar",
 *   encoding: { x: { field: "a", type: "nominal" }, y: { field: "b", type: "quantitative" } },
 * });
 * assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
 * ```
 */
export async function vegaLiteToSvg(spec: VegaLiteSpec): Promise<string> {
  const compiled = compile(spec as unknown as TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** One line of a {@linkcode lineChart}. */
export interface ChartSeries {
  /** Legend name. */
  name: string;
  /** x values. */
  x: ArrayLike<number>;
  /** y values (same length as `x`); non-finite values are skipped. */
  y: ArrayLike<number>;
}

/** Common chart options. */
export interface ChartOptions {
  /** Title above the chart. */
  title?: string;
  /** Second title line (e.g. what was skipped). */
  subtitle?: string;
  /** x-axis title. */
  xTitle?: string;
  /** y-axis title. */
  yTitle?: string;
  /** Logarithmic x axis (non-positive x are skipped). */
  logX?: boolean;
  /** Logarithmic y axis (non-positive y are skipped). */
  logY?: boolean;
  /** Plot width in pixels (default 520). */
  width?: number;
  /** Plot height in pixels (default 280). */
  height?: number;
  /** Legend title (default "Series"). */
  legendTitle?: string;
}

const FONT = "DejaVu Sans, Helvetica, Arial, sans-serif";
const CONFIG: TopLevelSpec["config"] = {
  font: FONT,
  title: { fontSize: 15, fontWeight: 600, anchor: "start", subtitleColor: "#666" },
  axis: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: 500, grid: true },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 320 },
  view: { stroke: "#ccc" },
  background: "white",
};

function titleOf(o: ChartOptions): TopLevelSpec["title"] {
  if (!o.title && !o.subtitle) return undefined;
  return o.subtitle ? { text: o.title ?? "", subtitle: o.subtitle } : o.title;
}

/**
 * A line chart, one line per series, with a legend, axis titles and optional log axes.
 * Points that a log axis cannot show (≤ 0) and non-finite values are skipped.
 *
 * @example
 * ```ts
 * import { lineChart } from "./charts.ts";
 * import { strict as assert } from "node:assert";
 * const svg = await lineChart([
 *   { name: "Train loss", x: [10, 20, 30], y: [2, 1, 0.5] },
 *   { name: "Grad norm", x: [10, 20, 30], y: [5, 3, 1] },
 * ], { xTitle: "Step", yTitle: "Value", logY: true });
 * assert.ok(svg.includes("Train loss") && svg.includes("Grad norm"));
 * ```
 */
export async function lineChart(
  series: readonly ChartSeries[],
  opts: ChartOptions = {},
): Promise<string> {
  const values: { x: number; y: number; series: string }[] = [];
  for (const s of series) {
    if (s.x.length !== s.y.length) {
      throw new RangeError(
        `Expected series "${s.name}" to have as many x as y values but found ${s.x.length} and ${s.y.length}`,
      );
    }
    for (let i = 0; i < s.x.length; i++) {
      const x = s.x[i]!, y = s.y[i]!;
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      if ((opts.logX && x <= 0) || (opts.logY && y <= 0)) continue;
      values.push({ x, y, series: s.name });
    }
  }
  const single = series.length === 1;
  return await vegaLiteToSvg({
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: titleOf(opts),
    width: opts.width ?? 520,
    height: opts.height ?? 280,
    config: CONFIG,
    data: { values },
    mark: { type: "line", strokeWidth: 1.8, point: values.length <= 40 },
    encoding: {
      x: {
        field: "x",
        type: "quantitative",
        title: opts.xTitle ?? "x",
        scale: opts.logX ? { type: "log" } : { zero: false },
      },
      y: {
        field: "y",
        type: "quantitative",
        title: opts.yTitle ?? "y",
        scale: opts.logY ? { type: "log" } : { zero: false },
      },
      color: {
        field: "series",
        type: "nominal",
        title: opts.legendTitle ?? "Series",
        sort: series.map((s) => s.name),
        legend: single && !opts.legendTitle ? null : { orient: "right" },
      },
    },
  });
}

/** One group of 2-D points for {@linkcode scatterChart}. */
export interface PointGroup {
  /** Legend name. */
  name: string;
  /** Interleaved x, y pairs. */
  points: ArrayLike<number>;
}

/**
 * A scatter chart of 2-D point groups (e.g. data vs model samples), equal axis scales.
 *
 * @example
 * ```ts
 * import { scatterChart } from "./charts.ts";
 * import { strict as assert } from "node:assert";
 * const svg = await scatterChart([
 *   { name: "Data", points: [0, 0, 1, 1] },
 *   { name: "Samples", points: [0.1, 0, 0.9, 1.1] },
 * ], { title: "Step 100" });
 * assert.ok(svg.includes("Samples"));
 * ```
 */
export async function scatterChart(
  groups: readonly PointGroup[],
  opts: ChartOptions & { domain?: [number, number] } = {},
): Promise<string> {
  const values: { x: number; y: number; group: string }[] = [];
  let lo = Infinity, hi = -Infinity;
  for (const g of groups) {
    if (g.points.length % 2 !== 0) {
      throw new RangeError(
        `Expected group "${g.name}" to hold x, y pairs but found ${g.points.length} values`,
      );
    }
    for (let i = 0; i + 1 < g.points.length; i += 2) {
      const x = g.points[i]!, y = g.points[i + 1]!;
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      values.push({ x, y, group: g.name });
      lo = Math.min(lo, x, y);
      hi = Math.max(hi, x, y);
    }
  }
  const domain = opts.domain ?? (values.length ? [lo, hi] : [0, 1]);
  const side = opts.width ?? 320;
  return await vegaLiteToSvg({
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: titleOf(opts),
    width: side,
    height: opts.height ?? side,
    config: CONFIG,
    data: { values },
    mark: { type: "circle", size: 9, opacity: 0.55 },
    encoding: {
      x: { field: "x", type: "quantitative", title: opts.xTitle ?? "x₁", scale: { domain } },
      y: { field: "y", type: "quantitative", title: opts.yTitle ?? "x₂", scale: { domain } },
      color: {
        field: "group",
        type: "nominal",
        title: opts.legendTitle ?? "Points",
        sort: groups.map((g) => g.name),
      },
    },
  });
}

// deno-lint-ignore no-explicit-any
let sharpModule: Promise<any> | undefined;

/**
 * Rasterise an SVG document to PNG bytes with sharp (libvips + librsvg). `density` is the
 * SVG's DPI (default 144: twice the CSS pixel size). Loads sharp on first use; without the
 * permissions sharp needs it throws an `Error` that lists them.
 *
 * @example
 * ```ts
 * import { lineChart, svgToPng } from "./charts.ts";
 * import { strict as assert } from "node:assert";
 * const png = await svgToPng(await lineChart([{ name: "a", x: [0, 1], y: [0, 1] }]));
 * assert.deepEqual(Array.from(png.subarray(1, 4)), [80, 78, 71]); // "PNG"
 * ```
 */
export async function svgToPng(svg: string, opts: { density?: number } = {}): Promise<Uint8Array> {
  if (typeof svg !== "string" || !svg.trimStart().startsWith("<")) {
    throw new TypeError("Expected an SVG document string");
  }
  // deno-lint-ignore no-import-prefix
  sharpModule ??= import("npm:sharp@0.35.5").then((m) => m.default).catch((e: Error) => {
    sharpModule = undefined;
    throw new Error(
      `svgToPng could not load sharp (${e.message}). It needs --allow-ffi and --allow-read on ` +
        `Deno's npm cache, --allow-env and --allow-sys=cpus,osRelease,networkInterfaces,` +
        `homedir,uid,gid,hostname`,
    );
  });
  const sharp = await sharpModule;
  const buf: Uint8Array = await sharp(new TextEncoder().encode(svg), {
    density: opts.density ?? 144,
  }).png().toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
