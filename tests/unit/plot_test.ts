/**
 * @file The raster plotting kit: plots come back as PNGs of the requested size, points and
 * lines land where the affine data→pixel map puts them, labels use the palette, bands and
 * log axes behave, and bad inputs are rejected.
 * @module
 */
import { strict as assert } from "node:assert";
import { decodePng } from "../../mod.ts";
import {
  Canvas,
  linePlot,
  PALETTE,
  quiverFrame,
  renderScatter,
  type Rgb,
  scatterPanels,
  scatterPlot,
} from "../../viz/mod.ts";

type Img = { width: number; height: number; rgba: Uint8Array };

async function png(bytes: Uint8Array): Promise<Img> {
  const d = await decodePng(bytes);
  assert.equal(d.channels, 4);
  return { width: d.width, height: d.height, rgba: d.data };
}

/** Pixels whose colour equals `c` exactly, optionally within an x range. */
function pixelsOf(img: Img, c: Rgb, x0 = 0, x1 = img.width): [number, number][] {
  const out: [number, number][] = [];
  for (let y = 0; y < img.height; y++) {
    for (let x = x0; x < x1; x++) {
      const o = (y * img.width + x) * 4;
      if (img.rgba[o] === c[0] && img.rgba[o + 1] === c[1] && img.rgba[o + 2] === c[2]) {
        out.push([x, y]);
      }
    }
  }
  return out;
}

const centroid = (ps: [number, number][]) => [
  ps.reduce((a, p) => a + p[0], 0) / ps.length,
  ps.reduce((a, p) => a + p[1], 0) / ps.length,
];

Deno.test("scatterPlot draws each point at an affine position in its label colour", async () => {
  // Three labelled points on a horizontal line plus one on a vertical; one outside the range.
  const pts = new Float32Array([-1, 0, 0, 0, 1, 0, 0, 1, 5, 5]);
  const img = await png(
    await scatterPlot(pts, {
      size: 200,
      range: 2,
      labels: [0, 1, 2, 3, 4],
      alpha: 1,
      radius: 2,
      title: "T",
    }),
  );
  assert.equal(img.width, 200);
  assert.equal(img.height, 200);
  const c = [0, 1, 2, 3].map((k) => {
    const ps = pixelsOf(img, PALETTE[k]!);
    assert.ok(ps.length >= 9 && ps.length <= 25, `label ${k}: ${ps.length} pixels`);
    return centroid(ps);
  });
  // Equal data steps → equal pixel steps; same data y → same pixel y; up is up.
  assert.ok(Math.abs((c[1]![0]! - c[0]![0]!) - (c[2]![0]! - c[1]![0]!)) <= 1);
  assert.ok(c[1]![0]! - c[0]![0]! > 30);
  assert.ok(Math.abs(c[0]![1]! - c[2]![1]!) <= 0.5);
  assert.ok(Math.abs(c[3]![0]! - c[1]![0]!) <= 0.5);
  assert.ok(c[3]![1]! < c[1]![1]! - 30);
  assert.equal(pixelsOf(img, PALETTE[4]!).length, 0, "the out-of-range point is not drawn");
  // Axis frame and tick labels are drawn (black and gray ink).
  assert.ok(pixelsOf(img, [0, 0, 0]).length > 400);
  assert.ok(pixelsOf(img, [110, 110, 110]).length > 50);
});

Deno.test("renderScatter with one colour and auto range keeps every point inside the axes", () => {
  const pts = new Float32Array([10, 20, 30, 40, 20, 30]);
  const img = renderScatter(pts, {
    size: 100,
    color: [255, 0, 0],
    alpha: 1,
    radius: 0.5,
    ticks: false,
  });
  const red = pixelsOf(img, [255, 0, 0]);
  assert.equal(red.length, 3);
  const [a, b, m] = red.sort((p, q) => p[0] - q[0]);
  assert.ok(a![1] > b![1] && a![1] > m![1], "lowest data y is lowest on screen");
  assert.ok(
    Math.abs(b![0] - (a![0] + m![0]) / 2) <= 1 || Math.abs(m![0] - (a![0] + b![0]) / 2) <= 1,
  );
});

Deno.test("scatterPanels lays panels side by side with a shared range and an overall title", async () => {
  const p = (x: number) => ({ points: new Float32Array([x, 0]), color: [255, 0, 0] as Rgb });
  const bytes = await scatterPanels([p(-1), p(0), p(1)], {
    size: 120,
    title: "LSD VS PSD",
    alpha: 1,
    radius: 2,
  });
  const img = await png(bytes);
  assert.equal(img.width, 360);
  assert.equal(img.height, 120 + 16);
  const xs = [0, 1, 2].map((k) => {
    const ps = pixelsOf(img, [255, 0, 0], k * 120, (k + 1) * 120);
    assert.ok(ps.length > 0, `panel ${k} has its point`);
    return centroid(ps)[0]! - k * 120;
  });
  // Shared range: the three points sit at three different positions within their panels.
  assert.ok(xs[0]! < xs[1]! - 10 && xs[1]! < xs[2]! - 10, `${xs}`);
  // Title ink in the top strip.
  let ink = 0;
  for (let y = 0; y < 14; y++) {
    for (let x = 0; x < 360; x++) if (img.rgba[(y * 360 + x) * 4] === 0) ink++;
  }
  assert.ok(ink > 20);
});

Deno.test("linePlot draws lines, shaded bands and straight lines on a log axis", async () => {
  const x = [0, 1, 2, 3, 4];
  const img = await png(
    await linePlot([
      { name: "exp", x, y: x.map((v) => 10 ** -v), color: [255, 0, 0] },
      {
        name: "band",
        x,
        y: x.map(() => 1e-2),
        lo: x.map(() => 1e-3),
        hi: x.map(() => 1e-1),
        color: [0, 0, 255],
      },
    ], { width: 300, height: 200, logY: true, title: "T", xlabel: "STEP", ylabel: "VAR" }),
  );
  assert.equal(img.width, 300);
  assert.equal(img.height, 200);
  // On a log axis 10^-x is a straight line: its pixel y is affine in pixel x.
  const red = pixelsOf(img, [255, 0, 0]).filter(([, y]) => y > 30); // skip the legend swatch
  const colY = (px: number) => {
    const ys = red.filter(([x]) => x === px).map(([, y]) => y);
    return ys.reduce((a, b) => a + b, 0) / ys.length;
  };
  const xsR = red.map(([x]) => x);
  const lo = Math.min(...xsR) + 10, hi = Math.max(...xsR) - 10, mid = Math.round((lo + hi) / 2);
  assert.ok(Math.abs(colY(mid) - (colY(lo) + colY(hi)) / 2) <= 1.5, "log-linear line is straight");
  assert.ok(colY(lo) < colY(hi) - 50, "decreasing series goes down");
  // The band: pixels blended 22% toward blue, above and below the blue line.
  const blue = pixelsOf(img, [0, 0, 255]).filter(([, y]) => y > 30);
  const lineY = centroid(blue)[1]!;
  const tint = [199, 199, 255] as Rgb; // white blended 0.22 toward (0, 0, 255)
  const band = pixelsOf(img, tint);
  assert.ok(band.some(([, y]) => y < lineY - 10) && band.some(([, y]) => y > lineY + 10));
});

Deno.test("quiverFrame draws each field's arrows in its colour and returns RGBA of the requested size", () => {
  const pts = new Float32Array([-0.5, 0, 0.5, 0]);
  const f = quiverFrame([
    { points: pts, vectors: new Float32Array([1, 0, 1, 0]), color: [255, 0, 0] },
    { points: pts, vectors: new Float32Array([0, 1, 0, 1]), color: [0, 0, 255] },
  ], { size: 120, range: 1, scale: 0.3 });
  assert.equal(f.width, 120);
  assert.equal(f.rgba.length, 120 * 120 * 4);
  const red = pixelsOf(f, [255, 0, 0]), blue = pixelsOf(f, [0, 0, 255]);
  assert.ok(red.length > 10 && blue.length > 10);
  // Horizontal arrows span more x than y; vertical arrows the reverse.
  const span = (ps: [number, number][], i: 0 | 1) =>
    Math.max(...ps.map((p) => p[i])) - Math.min(...ps.map((p) => p[i]));
  assert.ok(span(red, 0) > span(red, 1));
  const leftBlue = blue.filter(([x]) => x < 70);
  assert.ok(span(leftBlue, 1) > span(leftBlue, 0));
});

Deno.test("Canvas.text draws the 5×7 glyphs", () => {
  const c = new Canvas(12, 9);
  c.text(1, 1, "1", [0, 0, 0]);
  const one = ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."];
  for (let y = 0; y < 7; y++) {
    for (let x = 0; x < 5; x++) {
      const ink = c.rgba[((y + 1) * 12 + x + 1) * 4] === 0;
      assert.equal(ink, one[y]![x] === "#", `glyph "1" at (${x}, ${y})`);
    }
  }
  assert.equal(Canvas.textWidth("AB"), 11);
});

Deno.test("plot functions reject malformed inputs with named errors", async () => {
  await assert.rejects(scatterPlot(new Float32Array(3)), /n×2 .* length 3/);
  await assert.rejects(scatterPlot(new Float32Array(4), { labels: [1] }), /2 scatter labels/);
  await assert.rejects(scatterPlot(new Float32Array(4), { range: [1, 1] }), /lo < hi/);
  await assert.rejects(linePlot([]), /non-empty/);
  await assert.rejects(linePlot([{ name: "a", x: [1, 2], y: [1] }]), /"a" y to have 2 values/);
  assert.throws(
    () => quiverFrame([{ points: [0, 0], vectors: [1] }]),
    /vectors to match points/,
  );
  assert.throws(() => new Canvas(0, 5), /canvas width/);
});
