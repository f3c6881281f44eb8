/**
 * @file A small raster plotting kit: an RGBA canvas with lines, disks, filled spans and
 * 5×7 bitmap text, and the plots the experiments need (scatter, side-by-side scatter
 * panels, line plots with quantile bands and log axes, quiver frames for vector-field
 * GIFs). Each plot returns PNG bytes; the `render*` variants and {@linkcode quiverFrame}
 * return RGBA images (GIF frames).
 * @module
 */
import { checkInt } from "../lib/_util.ts";
import { ADVANCE, glyph, GLYPH_H } from "./_font.ts";
import { encodePng, type RgbaImage } from "../lib/formats/png.ts";
import { upscaleNearest } from "./grid.ts";

/** An RGB colour, 0..255 per channel. */
export type Rgb = readonly [number, number, number];

/**
 * The matplotlib "tab10" colours, used for labels and series in order.
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { PALETTE } from "./mod.ts";
 * assert.ok(PALETTE.length >= 8);
 * for (const c of PALETTE) assert.ok(c.length === 3 && c.every((v) => v >= 0 && v <= 255));
 * ```
 */
export const PALETTE: readonly Rgb[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
];

const WHITE: Rgb = [255, 255, 255], BLACK: Rgb = [0, 0, 0], GRAY: Rgb = [110, 110, 110];

/**
 * An RGBA raster with alpha-blended drawing primitives and bitmap text.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Canvas } from "./mod.ts";
 * import { decodePng, encodePng } from "../mod.ts";
 * const c = new Canvas(40, 20);
 * assert.deepEqual([...c.rgba.subarray(0, 4)], [255, 255, 255, 255]); // white background
 * c.line(0, 0, 39, 19, [255, 0, 0]);
 * assert.deepEqual([...c.rgba.subarray(0, 4)], [255, 0, 0, 255]); // the line's first pixel
 * c.text(2, 2, "HI", [0, 0, 0]);
 * const png = await encodePng(c.width, c.height, c.rgba);
 * const img = await decodePng(png);
 * assert.equal(img.width, 40);
 * assert.equal(img.height, 20);
 * ```
 */
export class Canvas implements RgbaImage {
  /** Width in pixels. */
  readonly width: number;
  /** Height in pixels. */
  readonly height: number;
  /** Pixels, row-major RGBA. */
  readonly rgba: Uint8Array;

  /** A canvas filled with `background` (white by default). */
  constructor(width: number, height: number, background: Rgb = WHITE) {
    this.width = checkInt("canvas width", width, 1, 16384);
    this.height = checkInt("canvas height", height, 1, 16384);
    this.rgba = new Uint8Array(width * height * 4);
    for (let i = 0; i < width * height; i++) {
      this.rgba[4 * i] = background[0];
      this.rgba[4 * i + 1] = background[1];
      this.rgba[4 * i + 2] = background[2];
      this.rgba[4 * i + 3] = 255;
    }
  }

  /** When set, drawing outside this box (inclusive pixel bounds) is ignored. */
  clip: { x0: number; y0: number; x1: number; y1: number } | null = null;

  /** Blend `color` with opacity `alpha` into pixel (x, y); out-of-range is ignored. */
  blend(x: number, y: number, color: Rgb, alpha = 1): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const k = this.clip;
    if (k && (x < k.x0 || x > k.x1 || y < k.y0 || y > k.y1)) return;
    const o = (y * this.width + x) * 4, d = this.rgba;
    d[o] = Math.round(d[o]! + (color[0] - d[o]!) * alpha);
    d[o + 1] = Math.round(d[o + 1]! + (color[1] - d[o + 1]!) * alpha);
    d[o + 2] = Math.round(d[o + 2]! + (color[2] - d[o + 2]!) * alpha);
  }

  /** Fill an axis-aligned rectangle. */
  rect(x0: number, y0: number, w: number, h: number, color: Rgb, alpha = 1): void {
    for (let y = Math.round(y0); y < Math.round(y0 + h); y++) {
      for (let x = Math.round(x0); x < Math.round(x0 + w); x++) this.blend(x, y, color, alpha);
    }
  }

  /** Outline an axis-aligned rectangle. */
  frame(x0: number, y0: number, w: number, h: number, color: Rgb): void {
    this.line(x0, y0, x0 + w, y0, color);
    this.line(x0, y0 + h, x0 + w, y0 + h, color);
    this.line(x0, y0, x0, y0 + h, color);
    this.line(x0 + w, y0, x0 + w, y0 + h, color);
  }

  /** A line (Bresenham) of the given width in pixels. */
  line(x0: number, y0: number, x1: number, y1: number, color: Rgb, width = 1, alpha = 1): void {
    if (![x0, y0, x1, y1].every(Number.isFinite)) return;
    x0 = Math.round(x0), y0 = Math.round(y0), x1 = Math.round(x1), y1 = Math.round(y1);
    // Clip absurdly long lines (e.g. a point mapped far outside the axes) to a bound.
    const lim = 4 * (this.width + this.height);
    if (Math.abs(x0) > lim || Math.abs(x1) > lim || Math.abs(y0) > lim || Math.abs(y1) > lim) {
      return;
    }
    const dx = Math.abs(x1 - x0), dy = -Math.abs(y1 - y0);
    const sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    let err = dx + dy;
    const r0 = -Math.floor((width - 1) / 2), r1 = Math.ceil((width - 1) / 2);
    for (;;) {
      for (let a = r0; a <= r1; a++) {
        for (let b = r0; b <= r1; b++) this.blend(x0 + a, y0 + b, color, alpha);
      }
      if (x0 === x1 && y0 === y1) break;
      const e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }

  /** A filled disk of radius `r` (r < 1 draws one pixel). */
  disk(cx: number, cy: number, r: number, color: Rgb, alpha = 1): void {
    if (!Number.isFinite(cx) || !Number.isFinite(cy)) return;
    if (r < 1) return this.blend(cx, cy, color, alpha);
    const R = Math.ceil(r);
    const x0 = Math.round(cx), y0 = Math.round(cy);
    for (let y = -R; y <= R; y++) {
      for (let x = -R; x <= R; x++) {
        if (x * x + y * y <= r * r + 0.5) this.blend(x0 + x, y0 + y, color, alpha);
      }
    }
  }

  /** An arrow from (x0, y0) to (x1, y1) with a head of `head` pixels. */
  arrow(x0: number, y0: number, x1: number, y1: number, color: Rgb, head = 4): void {
    this.line(x0, y0, x1, y1, color);
    const len = Math.hypot(x1 - x0, y1 - y0);
    if (!(len > 1)) return;
    const h = Math.min(head, len * 0.5), ux = (x1 - x0) / len, uy = (y1 - y0) / len;
    for (const s of [1, -1]) {
      const c = Math.cos(0.45), sn = Math.sin(0.45) * s;
      this.line(x1, y1, x1 - h * (ux * c - uy * sn), y1 - h * (uy * c + ux * sn), color);
    }
  }

  /** Width in pixels of `s` drawn at `scale`. */
  static textWidth(s: string, scale = 1): number {
    return s.length === 0 ? 0 : (s.length * ADVANCE - 1) * scale;
  }

  /** Draw `s` with its top-left corner at (x, y). */
  text(x: number, y: number, s: string, color: Rgb = BLACK, scale = 1): void {
    x = Math.round(x), y = Math.round(y);
    for (const ch of s) {
      const g = glyph(ch);
      for (let gy = 0; gy < GLYPH_H; gy++) {
        for (let gx = 0; gx < 5; gx++) {
          if (g[gy * 5 + gx]) this.rect(x + gx * scale, y + gy * scale, scale, scale, color);
        }
      }
      x += ADVANCE * scale;
    }
  }

  /** Draw `s` rotated 90° counter-clockwise (reading bottom to top), bottom-left at (x, y). */
  textUp(x: number, y: number, s: string, color: Rgb = BLACK, scale = 1): void {
    x = Math.round(x), y = Math.round(y);
    for (const ch of s) {
      const g = glyph(ch);
      for (let gy = 0; gy < GLYPH_H; gy++) {
        for (let gx = 0; gx < 5; gx++) {
          if (g[gy * 5 + gx]) this.rect(x + gy * scale, y - (gx + 1) * scale, scale, scale, color);
        }
      }
      y -= ADVANCE * scale;
    }
  }

  /** Copy another image into this one with its top-left corner at (x, y). */
  blit(img: RgbaImage, x: number, y: number): void {
    for (let r = 0; r < img.height; r++) {
      const ty = y + r;
      if (ty < 0 || ty >= this.height) continue;
      for (let c = 0; c < img.width; c++) {
        const tx = x + c;
        if (tx < 0 || tx >= this.width) continue;
        const s = (r * img.width + c) * 4, d = (ty * this.width + tx) * 4;
        this.rgba.set(img.rgba.subarray(s, s + 4), d);
      }
    }
  }
}

// ---- axes ----

function niceStep(span: number, target: number): number {
  const raw = span / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/** @internal Tick positions covering [lo, hi] at a "nice" step (1, 2, 5 × 10^k). */
export function niceTicks(lo: number, hi: number, target = 5): number[] {
  if (!(hi > lo)) return [lo];
  const step = niceStep(hi - lo, target);
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

/** @internal A compact label for tick `v` on an axis with tick spacing `step`. */
export function fmtTick(v: number, step: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(0).replace("e+", "e");
  const dec = Math.max(0, Math.min(6, Math.ceil(-Math.log10(step) - 1e-9)));
  return v.toFixed(dec);
}

type Box = { x: number; y: number; w: number; h: number };

/** Axes mapping data [x0, x1] × [y0, y1] into a pixel box (y up). */
class Axes {
  constructor(
    readonly c: Canvas,
    readonly box: Box,
    readonly xr: [number, number],
    readonly yr: [number, number],
    readonly logY = false,
  ) {}
  px(x: number): number {
    return this.box.x + (x - this.xr[0]) / (this.xr[1] - this.xr[0]) * this.box.w;
  }
  py(y: number): number {
    const v = this.logY ? Math.log10(y) : y;
    return this.box.y + this.box.h - (v - this.yr[0]) / (this.yr[1] - this.yr[0]) * this.box.h;
  }
  inside(px: number, py: number): boolean {
    const b = this.box;
    return px >= b.x && px <= b.x + b.w && py >= b.y && py <= b.y + b.h;
  }
  draw(ticks = true): void {
    const { c, box } = this;
    c.frame(box.x, box.y, box.w, box.h, BLACK);
    if (!ticks) return;
    const xt = niceTicks(this.xr[0], this.xr[1], Math.max(2, Math.floor(box.w / 50)));
    const xs = xt.length > 1 ? xt[1]! - xt[0]! : 1;
    for (const v of xt) {
      const x = this.px(v);
      c.line(x, box.y + box.h, x, box.y + box.h + 3, BLACK);
      const s = fmtTick(v, xs);
      c.text(x - Canvas.textWidth(s) / 2, box.y + box.h + 5, s, GRAY);
    }
    let yt: number[], ys: number;
    if (this.logY) {
      yt = [];
      for (let e = Math.ceil(this.yr[0] - 1e-9); e <= this.yr[1] + 1e-9; e++) yt.push(e);
      ys = 1;
    } else {
      yt = niceTicks(this.yr[0], this.yr[1], Math.max(2, Math.floor(box.h / 40)));
      ys = yt.length > 1 ? yt[1]! - yt[0]! : 1;
    }
    for (const v of yt) {
      const y = this.logY ? this.py(10 ** v) : this.py(v);
      c.line(box.x - 3, y, box.x, y, BLACK);
      const s = this.logY ? `1e${v}` : fmtTick(v, ys);
      c.text(box.x - 5 - Canvas.textWidth(s), y - 3, s, GRAY);
    }
  }
}

function dataRange(values: ArrayLike<number>, stride: number, off: number): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (let i = off; i < values.length; i += stride) {
    const v = values[i]!;
    if (Number.isFinite(v)) lo = Math.min(lo, v), hi = Math.max(hi, v);
  }
  if (!(hi >= lo)) return [-1, 1];
  if (hi === lo) return [lo - 1, hi + 1];
  const pad = 0.05 * (hi - lo);
  return [lo - pad, hi + pad];
}

/** A plot range: `r` → [−r, r] on both axes, `[lo, hi]` on both, or `[x0, x1, y0, y1]`. */
export type PlotRange =
  | number
  | readonly [number, number]
  | readonly [number, number, number, number];

function resolveRange(range: PlotRange | undefined, pts: ArrayLike<number>): {
  xr: [number, number];
  yr: [number, number];
} {
  if (range === undefined) return { xr: dataRange(pts, 2, 0), yr: dataRange(pts, 2, 1) };
  const r: number[] = typeof range === "number"
    ? [-range, range, -range, range]
    : range.length === 2
    ? [range[0], range[1], range[0], range[1]]
    : [...range];
  if (!(r[1]! > r[0]! && r[3]! > r[2]!)) {
    throw new RangeError(
      `Expected plot range with lo < hi on both axes but found [${r.join(", ")}]`,
    );
  }
  return { xr: [r[0]!, r[1]!], yr: [r[2]!, r[3]!] };
}

function checkPoints(name: string, pts: ArrayLike<number>): number {
  if (!pts || typeof pts.length !== "number" || pts.length % 2 !== 0) {
    throw new RangeError(
      `Expected ${name} to be n×2 interleaved coordinates (even length) but found length ${pts?.length}`,
    );
  }
  return pts.length / 2;
}

function drawTitle(c: Canvas, title: string | undefined, cx: number, y: number): void {
  if (title) c.text(cx - Canvas.textWidth(title) / 2, y, title, BLACK);
}

/** Options of {@linkcode scatterPlot}. */
export interface ScatterOptions {
  /** Axis range (default: the data's range plus 5%). */
  range?: PlotRange;
  /** Image side in pixels (default 320). */
  size?: number;
  /** One colour for every point (default the first palette colour). */
  color?: Rgb;
  /** Per-point integer labels, coloured with {@linkcode PALETTE}. */
  labels?: ArrayLike<number>;
  /** Title drawn above the axes. */
  title?: string;
  /** Point radius in pixels (default 1.5). */
  radius?: number;
  /** Point opacity (default 0.6). */
  alpha?: number;
  /** Draw tick labels (default true). */
  ticks?: boolean;
  /** Extra point sets drawn on top (e.g. cluster centers), each with its own colour. */
  overlays?: { points: ArrayLike<number>; color: Rgb; radius?: number }[];
}

/**
 * Render a 2-D scatter plot as an RGBA image (see {@linkcode scatterPlot} for PNG).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderScatter } from "./mod.ts";
 * const img = renderScatter(new Float32Array([0, 0, 1, 1]), { size: 64, range: 2 });
 * assert.equal(img.width, 64);
 * assert.equal(img.height, 64);
 * ```
 */
export function renderScatter(points: ArrayLike<number>, opts: ScatterOptions = {}): Canvas {
  const n = checkPoints("scatter points", points);
  const size = checkInt("scatter size", opts.size ?? 320, 32, 8192);
  if (opts.labels && opts.labels.length !== n) {
    throw new RangeError(
      `Expected ${n} scatter labels (one per point) but found ${opts.labels.length}`,
    );
  }
  const c = new Canvas(size, size);
  const ticks = opts.ticks ?? true;
  const top = opts.title ? 14 : 6, left = ticks ? 34 : 6, bottom = ticks ? 16 : 6, right = 8;
  const box = { x: left, y: top, w: size - left - right, h: size - top - bottom };
  const { xr, yr } = resolveRange(opts.range, points);
  const ax = new Axes(c, box, xr, yr);
  const r = opts.radius ?? 1.5, alpha = opts.alpha ?? 0.6;
  for (let i = 0; i < n; i++) {
    const x = ax.px(points[2 * i]!), y = ax.py(points[2 * i + 1]!);
    if (!ax.inside(x, y)) continue;
    const col = opts.labels
      ? PALETTE[((Math.round(opts.labels[i]!) % PALETTE.length) + PALETTE.length) % PALETTE.length]!
      : opts.color ?? PALETTE[0]!;
    c.disk(x, y, r, col, alpha);
  }
  for (const ov of opts.overlays ?? []) {
    const m = checkPoints("overlay points", ov.points);
    for (let i = 0; i < m; i++) {
      const x = ax.px(ov.points[2 * i]!), y = ax.py(ov.points[2 * i + 1]!);
      if (ax.inside(x, y)) c.disk(x, y, ov.radius ?? 3, ov.color, 1);
    }
  }
  ax.draw(ticks);
  drawTitle(c, opts.title, size / 2, 3);
  return c;
}

/**
 * A 2-D scatter plot as PNG bytes; `points` is n×2 interleaved (x0, y0, x1, y1, …).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodePng } from "../mod.ts";
 * import { scatterPlot } from "./mod.ts";
 * const png = await scatterPlot(new Float32Array([0, 0, 1, 1, -1, 0.5]), {
 *   labels: [0, 1, 2], title: "GMM", size: 96,
 * });
 * assert.equal((await decodePng(png)).width, 96);
 * ```
 */
export async function scatterPlot(
  points: ArrayLike<number>,
  opts: ScatterOptions = {},
): Promise<Uint8Array> {
  const c = renderScatter(points, opts);
  return await encodePng(c.width, c.height, c.rgba);
}

/** One panel of {@linkcode scatterPanels}. */
export interface ScatterPanel {
  /** n×2 interleaved points. */
  points: ArrayLike<number>;
  /** Panel title (e.g. "PSD N=4"). */
  title?: string;
  /** Per-point labels. */
  labels?: ArrayLike<number>;
  /** Single colour when no labels are given. */
  color?: Rgb;
}

/** Options of {@linkcode scatterPanels}. */
export interface ScatterPanelsOptions extends Omit<ScatterOptions, "labels" | "title" | "color"> {
  /** Overall title above the panels. */
  title?: string;
  /** Panels per row (default: all in one row). */
  cols?: number;
}

/**
 * Render scatter panels side by side as an RGBA image (see {@linkcode scatterPanels}).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderScatterPanels } from "./mod.ts";
 * const p = { points: new Float32Array([0, 0]) };
 * const img = renderScatterPanels([p, p, p], { size: 64, range: 1, cols: 2 });
 * assert.equal(img.width, 2 * 64); // two columns
 * ```
 */
export function renderScatterPanels(
  panels: readonly ScatterPanel[],
  opts: ScatterPanelsOptions = {},
): Canvas {
  if (!panels || panels.length === 0) {
    throw new RangeError("Expected scatter panels to be a non-empty array");
  }
  const size = opts.size ?? 240;
  const cols = checkInt("scatter panel cols", opts.cols ?? panels.length, 1);
  const rows = Math.ceil(panels.length / cols);
  const head = opts.title ? 16 : 0;
  const c = new Canvas(Math.min(cols, panels.length) * size, rows * size + head);
  // Share one range across panels so they are comparable.
  let range = opts.range;
  if (range === undefined) {
    const all: number[] = [];
    for (const p of panels) for (let i = 0; i < p.points.length; i++) all.push(p.points[i]!);
    const { xr, yr } = resolveRange(undefined, all);
    range = [xr[0], xr[1], yr[0], yr[1]];
  }
  panels.forEach((p, i) => {
    const img = renderScatter(p.points, {
      ...opts,
      range,
      size,
      title: p.title,
      labels: p.labels,
      color: p.color,
    });
    c.blit(img, (i % cols) * size, head + Math.floor(i / cols) * size);
  });
  drawTitle(c, opts.title, c.width / 2, 4);
  return c;
}

/**
 * Scatter panels side by side (e.g. LSD vs PSD at N = 1, 2, 4, 8, 16) as PNG bytes,
 * sharing one axis range.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodePng } from "../mod.ts";
 * import { scatterPanels } from "./mod.ts";
 * const pts = new Float32Array([0, 0, 0.5, 0.5]);
 * const png = await scatterPanels([{ points: pts, title: "N=1" }, { points: pts, title: "N=2" }], {
 *   size: 80, title: "LSD",
 * });
 * assert.equal((await decodePng(png)).width, 2 * 80); // one row of two panels
 * ```
 */
export async function scatterPanels(
  panels: readonly ScatterPanel[],
  opts: ScatterPanelsOptions = {},
): Promise<Uint8Array> {
  const c = renderScatterPanels(panels, opts);
  return await encodePng(c.width, c.height, c.rgba);
}

/** One series of {@linkcode linePlot}. */
export interface LineSeries {
  /** Legend name. */
  name: string;
  /** X coordinates. */
  x: readonly number[];
  /** Y values (NaN or, with `logY`, non-positive values break the line). */
  y: readonly number[];
  /** Lower band edge (e.g. the 15% quantile). */
  lo?: readonly number[];
  /** Upper band edge (e.g. the 85% quantile). */
  hi?: readonly number[];
  /** Colour (default: the palette in order). */
  color?: Rgb;
}

/** Options of {@linkcode linePlot}. */
export interface LinePlotOptions {
  /** Title above the axes. */
  title?: string;
  /** X-axis label. */
  xlabel?: string;
  /** Y-axis label (drawn vertically). */
  ylabel?: string;
  /** Logarithmic y axis. */
  logY?: boolean;
  /** Image width (default 480). */
  width?: number;
  /** Image height (default 320). */
  height?: number;
  /** Legend (default true when more than one series or any is named). */
  legend?: boolean;
}

/**
 * Render a line plot as an RGBA image (see {@linkcode linePlot}).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { renderLinePlot } from "./mod.ts";
 * const img = renderLinePlot([{ name: "loss", x: [0, 1, 2], y: [3, 2, 1] }], { width: 120, height: 90 });
 * assert.equal(img.width, 120);
 * assert.equal(img.height, 90);
 * ```
 */
export function renderLinePlot(series: readonly LineSeries[], opts: LinePlotOptions = {}): Canvas {
  if (!series || series.length === 0) {
    throw new RangeError("Expected line plot series to be a non-empty array");
  }
  const W = checkInt("line plot width", opts.width ?? 480, 64, 8192);
  const H = checkInt("line plot height", opts.height ?? 320, 48, 8192);
  const logY = opts.logY ?? false;
  const tf = (v: number) => logY ? (v > 0 ? Math.log10(v) : NaN) : v;
  let xlo = Infinity, xhi = -Infinity, ylo = Infinity, yhi = -Infinity;
  for (const s of series) {
    for (const k of ["y", "lo", "hi"] as const) {
      const arr = s[k];
      if (arr && arr.length !== s.x.length) {
        throw new RangeError(
          `Expected series "${s.name}" ${k} to have ${s.x.length} values (like x) but found ${arr.length}`,
        );
      }
    }
    s.x.forEach((x, i) => {
      if (!Number.isFinite(x)) return;
      for (const v of [s.y[i], s.lo?.[i], s.hi?.[i]]) {
        const t = v === undefined ? NaN : tf(v);
        if (!Number.isFinite(t)) continue;
        xlo = Math.min(xlo, x), xhi = Math.max(xhi, x);
        ylo = Math.min(ylo, t), yhi = Math.max(yhi, t);
      }
    });
  }
  if (!(xhi >= xlo)) xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  if (xhi === xlo) xlo -= 1, xhi += 1;
  if (yhi === ylo) ylo -= logY ? 0.5 : 1, yhi += logY ? 0.5 : 1;
  if (logY) ylo = Math.floor(ylo), yhi = Math.ceil(yhi);
  else {
    const pad = 0.05 * (yhi - ylo);
    ylo -= pad, yhi += pad;
  }
  const c = new Canvas(W, H);
  const top = opts.title ? 16 : 8, left = opts.ylabel ? 52 : 42;
  const bottom = opts.xlabel ? 30 : 18, right = 10;
  const ax = new Axes(
    c,
    { x: left, y: top, w: W - left - right, h: H - top - bottom },
    [xlo, xhi],
    [
      ylo,
      yhi,
    ],
    logY,
  );
  const colors = series.map((s, i) => s.color ?? PALETTE[i % PALETTE.length]!);
  // Bands first so every line stays visible on top of them.
  series.forEach((s, k) => {
    if (!s.lo || !s.hi) return;
    for (let i = 0; i + 1 < s.x.length; i++) {
      const xa = ax.px(s.x[i]!), xb = ax.px(s.x[i + 1]!);
      const la = ax.py(s.lo[i]!), lb = ax.py(s.lo[i + 1]!);
      const ha = ax.py(s.hi[i]!), hb = ax.py(s.hi[i + 1]!);
      if (![xa, xb, la, lb, ha, hb].every(Number.isFinite) || xb <= xa) continue;
      for (let px = Math.ceil(xa); px < xb || (px === Math.ceil(xa) && px <= xb); px++) {
        const f = (px - xa) / (xb - xa);
        const y0 = la + f * (lb - la), y1 = ha + f * (hb - ha);
        const [u, v] = y0 < y1 ? [y0, y1] : [y1, y0];
        for (let py = Math.ceil(u); py <= v; py++) {
          if (ax.inside(px, py)) c.blend(px, py, colors[k]!, 0.22);
        }
      }
    }
  });
  series.forEach((s, k) => {
    for (let i = 0; i + 1 < s.x.length; i++) {
      const x0 = ax.px(s.x[i]!),
        y0 = ax.py(s.y[i]!),
        x1 = ax.px(s.x[i + 1]!),
        y1 = ax.py(s.y[i + 1]!);
      if ([x0, y0, x1, y1].every(Number.isFinite)) c.line(x0, y0, x1, y1, colors[k]!, 2);
    }
    if (s.x.length === 1) c.disk(ax.px(s.x[0]!), ax.py(s.y[0]!), 2, colors[k]!);
  });
  ax.draw(true);
  drawTitle(c, opts.title, left + (W - left - right) / 2, 4);
  if (opts.xlabel) drawTitle(c, opts.xlabel, left + (W - left - right) / 2, H - 10);
  if (opts.ylabel) {
    c.textUp(3, top + (H - top - bottom) / 2 + Canvas.textWidth(opts.ylabel) / 2, opts.ylabel);
  }
  if (opts.legend ?? (series.length > 1 || series.some((s) => s.name))) {
    const lw = Math.max(...series.map((s) => Canvas.textWidth(s.name))) + 20;
    const lx = left + (W - left - right) - lw - 4, ly = top + 4;
    c.rect(lx, ly, lw, series.length * 10 + 4, WHITE, 0.85);
    c.frame(lx, ly, lw, series.length * 10 + 4, GRAY);
    series.forEach((s, k) => {
      c.rect(lx + 3, ly + 4 + k * 10, 10, 6, colors[k]!);
      c.text(lx + 16, ly + 3 + k * 10, s.name);
    });
  }
  return c;
}

/**
 * A line plot as PNG bytes: one line per series, shaded `lo..hi` bands (e.g. 15–85%
 * quantiles), optional log y axis, legend.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodePng } from "../mod.ts";
 * import { linePlot } from "./mod.ts";
 * const png = await linePlot([
 *   { name: "CFM", x: [1, 2, 3], y: [1, 0.5, 0.2], lo: [0.8, 0.4, 0.1], hi: [1.2, 0.6, 0.3] },
 * ], { title: "variance", xlabel: "t", logY: true, width: 160, height: 120 });
 * const img = await decodePng(png);
 * assert.deepEqual([img.width, img.height], [160, 120]);
 * ```
 */
export async function linePlot(
  series: readonly LineSeries[],
  opts: LinePlotOptions = {},
): Promise<Uint8Array> {
  const c = renderLinePlot(series, opts);
  return await encodePng(c.width, c.height, c.rgba);
}

/** A vector field sampled at points: n×2 positions and n×2 vectors. */
export interface QuiverField {
  /** n×2 interleaved positions. */
  points: ArrayLike<number>;
  /** n×2 interleaved vectors at those positions. */
  vectors: ArrayLike<number>;
  /** Arrow colour (default: palette in order). */
  color?: Rgb;
  /** Legend name. */
  name?: string;
}

/** Options of {@linkcode quiverFrame}. */
export interface QuiverOptions {
  /** Axis range (default: the positions' range). */
  range?: PlotRange;
  /** Image side in pixels (default 320). */
  size?: number;
  /** Title (e.g. "t = 0.50"). */
  title?: string;
  /** Data units per vector unit (default: the longest arrow spans ~1.5 grid cells). */
  scale?: number;
  /** Points drawn underneath (e.g. current samples), n×2. */
  background?: ArrayLike<number>;
}

/**
 * Draw vector fields (e.g. learned vs. true velocity) as arrows on one frame and return
 * RGBA, ready for {@linkcode encodeGif} or {@linkcode encodePng}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { encodeGif, quiverFrame } from "./mod.ts";
 * const pts = new Float32Array([-0.5, 0, 0.5, 0]);
 * const vec = new Float32Array([0, 1, 0, -1]);
 * const f = quiverFrame([{ points: pts, vectors: vec, name: "true" }], { size: 64, range: 1 });
 * assert.deepEqual([f.width, f.height], [64, 64]);
 * const gif = encodeGif([f, f]);
 * assert.equal(new TextDecoder().decode(gif.subarray(0, 6)), "GIF89a");
 * ```
 */
export function quiverFrame(fields: readonly QuiverField[], opts: QuiverOptions = {}): Canvas {
  if (!fields || fields.length === 0) {
    throw new RangeError("Expected quiver fields to be a non-empty array");
  }
  for (const f of fields) {
    const n = checkPoints("quiver points", f.points);
    if (f.vectors.length !== 2 * n) {
      throw new RangeError(
        `Expected quiver vectors to match points (${2 * n} values) but found ${f.vectors.length}`,
      );
    }
  }
  const size = checkInt("quiver size", opts.size ?? 320, 32, 8192);
  const c = new Canvas(size, size);
  const top = opts.title ? 14 : 6, left = 34, bottom = 16, right = 8;
  const box = { x: left, y: top, w: size - left - right, h: size - top - bottom };
  const { xr, yr } = resolveRange(opts.range, fields[0]!.points);
  const ax = new Axes(c, box, xr, yr);
  if (opts.background) {
    const m = checkPoints("quiver background", opts.background);
    for (let i = 0; i < m; i++) {
      const x = ax.px(opts.background[2 * i]!), y = ax.py(opts.background[2 * i + 1]!);
      if (ax.inside(x, y)) c.disk(x, y, 1, [160, 160, 160], 0.5);
    }
  }
  let scale = opts.scale;
  if (scale === undefined) {
    let maxLen = 0;
    const n0 = fields[0]!.points.length / 2;
    for (const f of fields) {
      for (let i = 0; i < f.vectors.length; i += 2) {
        const l = Math.hypot(f.vectors[i]!, f.vectors[i + 1]!);
        if (Number.isFinite(l)) maxLen = Math.max(maxLen, l);
      }
    }
    const cell = (xr[1] - xr[0]) / Math.max(1, Math.sqrt(n0));
    scale = maxLen > 0 ? 1.5 * cell / maxLen : 1;
  }
  // Arrows near the edge would otherwise run over the tick labels.
  c.clip = { x0: box.x, y0: box.y, x1: box.x + box.w, y1: box.y + box.h };
  fields.forEach((f, k) => {
    const col = f.color ?? PALETTE[k % PALETTE.length]!;
    for (let i = 0; i < f.points.length; i += 2) {
      const x = f.points[i]!, y = f.points[i + 1]!;
      const x0 = ax.px(x), y0 = ax.py(y);
      if (!ax.inside(x0, y0)) continue;
      c.arrow(
        x0,
        y0,
        ax.px(x + scale! * f.vectors[i]!),
        ax.py(y + scale! * f.vectors[i + 1]!),
        col,
        3,
      );
    }
  });
  c.clip = null;
  ax.draw(true);
  drawTitle(c, opts.title, size / 2, 3);
  const named = fields.filter((f) => f.name);
  if (named.length) {
    fields.forEach((f, k) => {
      if (!f.name) return;
      const y = top + 3 + k * 10;
      c.rect(left + 4, y + 1, 8, 5, f.color ?? PALETTE[k % PALETTE.length]!);
      c.text(left + 15, y, f.name);
    });
  }
  return c;
}

/**
 * A quiver plot as PNG bytes (see {@linkcode quiverFrame}).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodePng } from "../mod.ts";
 * import { quiverPlot } from "./mod.ts";
 * const png = await quiverPlot([{ points: [0, 0], vectors: [1, 0] }], { size: 64, range: 1 });
 * assert.equal((await decodePng(png)).width, 64);
 * ```
 */
export async function quiverPlot(
  fields: readonly QuiverField[],
  opts: QuiverOptions = {},
): Promise<Uint8Array> {
  const c = quiverFrame(fields, opts);
  return await encodePng(c.width, c.height, c.rgba);
}

/**
 * A grid of equal rows (e.g. `imageGrid`'s class grid, one class per row) upscaled by nearest
 * neighbour, with one label per row drawn on a white margin to its left in the 5×7 bitmap font:
 * the class grid a reader can name without a legend, as PNG pixels with no font or SVG renderer.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { labelGridRows } from "./mod.ts";
 * const grid = { width: 4, height: 4, rgba: new Uint8Array(64).fill(0) };
 * const out = labelGridRows(grid, ["A", "B"], { scale: 2 });
 * assert.equal(out.height, 8); // 4 rows of pixels ×2
 * assert.equal(out.width, 8 + 5 + 8); // label margin (text 5 + 8) + 4 × 2
 * assert.equal(out.rgba[0], 255); // the margin is white
 * assert.equal(out.rgba[(out.width - 1) * 4], 0); // the grid kept its pixels
 * ```
 */
export function labelGridRows(
  grid: RgbaImage,
  rowLabels: readonly string[],
  opts: { scale?: number } = {},
): Canvas {
  const k = checkInt("grid scale", opts.scale ?? 3, 1, 64);
  if (rowLabels.length < 1) throw new RangeError("Expected at least one row label");
  const big = upscaleNearest(grid, k);
  const margin = Math.max(...rowLabels.map((s) => Canvas.textWidth(s))) + 8;
  const c = new Canvas(margin + big.width, big.height);
  c.blit(big, margin, 0);
  const rowH = big.height / rowLabels.length;
  rowLabels.forEach((s, r) => c.text(margin - 4 - Canvas.textWidth(s), r * rowH + rowH / 2 - 3, s));
  return c;
}
