/**
 * @file viz/charts: the SVG charts are well-formed XML (a strict parser) and hold the series
 * they were given (one line per series with one vertex per point, legend entries, log-axis
 * decade ticks); labelled grids carry their row labels and an upscaled PNG; sharp turns the
 * SVG into a PNG of the expected size.
 */
import { strict as assert } from "node:assert";
import {
  labelledGridSvg,
  lineChart,
  scatterChart,
  svgToPng,
  upscaleNearest,
} from "../../viz/charts.ts";
import { decodePng } from "../../mod.ts";
import { findAll, parseXml, textOf } from "../_xml.ts";

const texts = (svg: string) =>
  findAll(parseXml(svg), (e) => e.name === "text").map((e) => textOf(e).trim());

Deno.test("lineChart: valid SVG with one line per series, every point, a legend and log ticks", async () => {
  const series = [
    { name: "Train loss", x: [10, 20, 30, 40], y: [3, 0.9, 0.2, 0.04] },
    { name: "Grad norm", x: [10, 20, 30], y: [5, 2, 1] },
  ];
  const svg = await lineChart(series, {
    title: "Training curves",
    xTitle: "Step",
    yTitle: "Value",
    logY: true,
  });
  const root = parseXml(svg);
  assert.equal(root.name, "svg");
  const lines = findAll(root, (e) => e.attrs["aria-roledescription"] === "line mark");
  assert.equal(lines.length, 2);
  for (const s of series) {
    const line = lines.find((l) => l.attrs["aria-label"]!.includes(`Series: ${s.name}`));
    assert.ok(line, `a line for ${s.name}`);
    // One move-to plus one line-to per further point.
    assert.equal(line!.attrs.d!.split(/[ML]/).filter(Boolean).length, s.x.length, s.name);
  }
  const t = texts(svg);
  for (const want of ["Training curves", "Step", "Value", "Train loss", "Grad norm", "Series"]) {
    assert.ok(t.includes(want), `text "${want}" in ${JSON.stringify(t)}`);
  }
  // A log axis labels decades.
  assert.ok(t.includes("0.1") && t.includes("1"), `decade ticks in ${t}`);
});

Deno.test("lineChart skips non-finite values and points a log axis cannot show", async () => {
  const svg = await lineChart([{ name: "a", x: [1, 2, 3, 4], y: [1, NaN, -1, 0.5] }], {
    logY: true,
  });
  const [line] = findAll(parseXml(svg), (e) => e.attrs["aria-roledescription"] === "line mark");
  assert.equal(line!.attrs.d!.split(/[ML]/).filter(Boolean).length, 2);
  await assert.rejects(() => lineChart([{ name: "bad", x: [1, 2], y: [1] }]), RangeError);
});

Deno.test("scatterChart: every point of every group, escaped names", async () => {
  const svg = await scatterChart([
    { name: "Data <x>", points: [0, 0, 1, 1, 2, 2] },
    { name: "Model & co", points: [0.5, 0.5] },
  ], { title: "Samples at step 100" });
  const root = parseXml(svg);
  const dots = findAll(root, (e) => e.attrs["aria-roledescription"] === "circle");
  assert.equal(dots.length, 4);
  const t = texts(svg);
  assert.ok(t.includes("Data <x>") && t.includes("Model & co"), JSON.stringify(t));
});

Deno.test("labelledGridSvg: class names on the rows and a nearest-neighbour upscaled PNG", async () => {
  const rows = ["T-shirt/top", "Trouser", "Ankle boot"];
  const imgs = new Float32Array(3 * 4 * 1 * 5 * 5).map((_, i) => ((i * 7) % 11) / 5 - 1);
  const svg = await labelledGridSvg(imgs, [1, 5, 5], { cols: 4, rowLabels: rows, scale: 4 });
  const root = parseXml(svg);
  assert.deepEqual(texts(svg), rows);
  const [image] = findAll(root, (e) => e.name === "image");
  const b64 = image!.attrs.href!.replace("data:image/png;base64,", "");
  const png = await decodePng(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  // 4 tiles of 5 px with 1 px padding on both sides, times 4.
  assert.equal(png.width, (4 * 5 + 5 * 1) * 4);
  assert.equal(png.height, (3 * 5 + 4 * 1) * 4);
  await assert.rejects(
    () => labelledGridSvg(imgs, [1, 5, 5], { cols: 3, rowLabels: rows }),
    RangeError,
  );
});

Deno.test("upscaleNearest repeats each pixel k × k times", () => {
  const img = { width: 2, height: 1, rgba: new Uint8Array([1, 2, 3, 255, 9, 9, 9, 255]) };
  const big = upscaleNearest(img, 2);
  assert.equal(big.width, 4);
  assert.deepEqual(Array.from(big.rgba.subarray(0, 8)), [1, 2, 3, 255, 1, 2, 3, 255]);
  assert.deepEqual(Array.from(big.rgba.subarray(24, 32)), [9, 9, 9, 255, 9, 9, 9, 255]);
});

Deno.test("svgToPng: sharp rasterises a chart at twice its CSS size", async () => {
  const svg = await lineChart([{ name: "Loss", x: [0, 1, 2], y: [2, 1, 0.5] }], {
    width: 200,
    height: 100,
  });
  const m = /^<svg[^>]*width="(\d+)"[^>]*height="(\d+)"/.exec(svg)!;
  const png = await svgToPng(svg);
  const img = await decodePng(png);
  assert.equal(img.width, 2 * Number(m[1]));
  assert.equal(img.height, 2 * Number(m[2]));
  await assert.rejects(() => svgToPng("not svg"), TypeError);
});
