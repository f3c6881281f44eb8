/**
 * flowgpu/viz/report: a self-contained HTML report of one training run, or of several runs
 * overlaid — configuration, metric curves (Vega-Lite SVG, log axes where the values span
 * decades), sample grids and scatter plots per checkpoint, GIFs, plots, checkpoints, the
 * environment, and what input was skipped. Every image is inlined as a data URL, so the file
 * can be mailed or archived alone. Rendering is pure (no file access): `deno task report`
 * reads the run directory and passes its contents here.
 *
 * @example
 * ```ts
 * import { renderReport } from "./report.ts";
 * import { strict as assert } from "node:assert";
 * const html = await renderReport([{
 *   name: "demo", config: { lr: 0.001 }, records: [{ step: 1, "training/loss": 1 }, { step: 2, "training/loss": 0.5 }],
 *   skipped: [], images: [], checkpoints: [], environment: {},
 * }]);
 * assert.ok(html.includes("<!doctype html>") && html.includes("training/loss"));
 * ```
 * @module
 */
import { type ChartSeries, lineChart } from "./charts.ts";

/** An image file of a run (PNG, GIF or SVG). */
export interface ReportImage {
  /** Path relative to the run directory, e.g. `samples/step-000100.png`. */
  path: string;
  /** The step it belongs to (parsed from the name), or null. */
  step: number | null;
  /** The file's bytes. */
  bytes: Uint8Array;
}

/** What a report shows of one run. */
export interface ReportRun {
  /** Display name (usually the run directory's name). */
  name: string;
  /** `config.json`, or null when missing or unreadable. */
  config: Record<string, unknown> | null;
  /** Metric records (metrics.jsonl and eval*.jsonl), each with a numeric `step` if logged. */
  records: Record<string, unknown>[];
  /** Human-readable notes on input that was skipped (torn lines, unreadable files). */
  skipped: string[];
  /** Images under samples/ and plots/. */
  images: ReportImage[];
  /** Checkpoint files: name, size in bytes, step. */
  checkpoints: { path: string; bytes: number; step: number | null }[];
  /** Environment the run recorded (backend, adapter, commit, …). */
  environment: Record<string, string>;
}

/** Options of {@linkcode renderReport}. */
export interface ReportOptions {
  /** Page title (default: the run name, or "Comparison of N runs"). */
  title?: string;
  /** Environment the report was generated in (shown beside what the run recorded). */
  generatedIn?: Record<string, string>;
}

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/**
 * The MIME type of an image file by its leading bytes (PNG, GIF, SVG), or null.
 *
 * @example
 * ```ts
 * import { imageMime } from "./report.ts";
 * import { strict as assert } from "node:assert";
 * assert.equal(imageMime(new Uint8Array([0x89, 0x50, 0x4e, 0x47])), "image/png");
 * assert.equal(imageMime(new TextEncoder().encode("GIF89a")), "image/gif");
 * assert.equal(imageMime(new Uint8Array([1, 2, 3])), null);
 * ```
 */
export function imageMime(bytes: Uint8Array): string | null {
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
    return "image/png";
  }
  if (bytes[0] === 0x47 && bytes[1] === 0x49 && bytes[2] === 0x46) return "image/gif";
  const head = new TextDecoder().decode(bytes.subarray(0, 512)).trimStart();
  if (head.startsWith("<svg") || (head.startsWith("<?xml") && head.includes("<svg"))) {
    return "image/svg+xml";
  }
  return null;
}

/** Pixel size of a PNG or GIF from its header (null for other formats). */
function imageSize(bytes: Uint8Array): [number, number] | null {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (imageMime(bytes) === "image/png" && bytes.length >= 24) {
    return [dv.getUint32(16), dv.getUint32(20)];
  }
  if (imageMime(bytes) === "image/gif" && bytes.length >= 10) {
    return [dv.getUint16(6, true), dv.getUint16(8, true)];
  }
  return null;
}

/**
 * Parse JSON-lines text: one object per non-empty line. A line that is not a JSON object is
 * skipped and described in `skipped` (a torn last line, as a crash mid-write leaves, is
 * named as such), so a report shows what is there.
 *
 * @example
 * ```ts
 * import { parseJsonl } from "./report.ts";
 * import { strict as assert } from "node:assert";
 * const r = parseJsonl('{"step":1,"loss":0.5}\n{"step":2,"lo', "metrics.jsonl");
 * assert.equal(r.records.length, 1);
 * assert.match(r.skipped[0]!, /metrics.jsonl: line 2 .*torn/);
 * ```
 */
export function parseJsonl(
  text: string,
  name: string,
): { records: Record<string, unknown>[]; skipped: string[] } {
  const lines = text.split("\n");
  let last = lines.length - 1;
  while (last >= 0 && lines[last]!.trim() === "") last--;
  const records: Record<string, unknown>[] = [];
  const skipped: string[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      v = undefined;
    }
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      records.push(v as Record<string, unknown>);
      return;
    }
    const what = i === last && !text.endsWith("\n")
      ? "is incomplete (torn last line: the run was stopped mid-write)"
      : "is not a JSON object";
    const shown = line.length > 60 ? `${line.slice(0, 60)}…` : line;
    skipped.push(`${name}: line ${i + 1} ${what}; skipped: ${shown}`);
  });
  return { records, skipped };
}

/** Numeric metric keys of some records (everything numeric except `step`), in first-seen order. */
function metricKeys(records: readonly Record<string, unknown>[]): string[] {
  const keys = new Set<string>();
  for (const r of records) {
    for (const [k, v] of Object.entries(r)) {
      if (k !== "step" && typeof v === "number") keys.add(k);
    }
  }
  return [...keys];
}

/**
 * Group metric records into chart series: one entry per metric key, with one series per run
 * (x = `step`, or the record's index when it has none).
 *
 * @example
 * ```ts
 * import { metricSeries } from "./report.ts";
 * import { strict as assert } from "node:assert";
 * const m = metricSeries([{ name: "a", records: [{ step: 1, loss: 2 }, { step: 2, loss: 1 }] }]);
 * assert.deepEqual(m.get("loss")![0]!.y, [2, 1]);
 * ```
 */
export function metricSeries(
  runs: readonly { name: string; records: readonly Record<string, unknown>[] }[],
): Map<string, ChartSeries[]> {
  const out = new Map<string, ChartSeries[]>();
  for (const run of runs) {
    for (const key of metricKeys(run.records)) {
      const x: number[] = [], y: number[] = [];
      run.records.forEach((r, i) => {
        const v = r[key];
        if (typeof v !== "number") return;
        x.push(typeof r.step === "number" ? r.step : i);
        y.push(v);
      });
      if (!out.has(key)) out.set(key, []);
      out.get(key)!.push({ name: run.name, x, y });
    }
  }
  return out;
}

/** Whether a metric reads better on a log axis: all positive and spanning over a decade. */
function wantsLog(series: readonly ChartSeries[]): boolean {
  let lo = Infinity, hi = -Infinity;
  for (const s of series) {
    for (let i = 0; i < s.y.length; i++) {
      const v = s.y[i]!;
      if (!Number.isFinite(v)) continue;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  return lo > 0 && hi / lo > 10;
}

/** "training/grad_norm" → "Grad norm". */
function humanise(key: string): string {
  const last = key.split("/").pop()!.replace(/[_-]+/g, " ").trim();
  return last.charAt(0).toUpperCase() + last.slice(1);
}

/** Flatten nested config objects into dotted keys. */
function flatten(
  o: unknown,
  prefix = "",
  out: Record<string, string> = {},
): Record<string, string> {
  if (o !== null && typeof o === "object" && !Array.isArray(o)) {
    for (const [k, v] of Object.entries(o)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out[prefix || "(value)"] = typeof o === "string" ? o : JSON.stringify(o);
  }
  return out;
}

function table(head: string[], rows: string[][], cls = ""): string {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join("");
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("\n");
  return `<table class="${cls}"><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table>`;
}

function imgTag(bytes: Uint8Array, alt: string, cls = ""): string {
  const mime = imageMime(bytes) ?? "application/octet-stream";
  const size = imageSize(bytes);
  // Small rasters (e.g. 28×28 grids) are shown enlarged with sharp pixels.
  const k = size ? Math.max(1, Math.min(4, Math.floor(320 / Math.max(size[0], 1)))) : 1;
  const dims = size ? ` width="${size[0] * k}" height="${size[1] * k}"` : "";
  return `<img class="${cls}" alt="${esc(alt)}" title="${esc(alt)}"${dims} ` +
    `src="data:${mime};base64,${base64(bytes)}">`;
}

const CSS = `
body { font: 14px/1.45 system-ui, "DejaVu Sans", sans-serif; color: #1d1d1f; margin: 0; }
header { background: #f4f5f7; border-bottom: 1px solid #ddd; padding: 1rem 2rem; }
header h1 { margin: 0 0 .2rem; font-size: 1.4rem; }
main { padding: 0 2rem 3rem; max-width: 1300px; }
h2 { border-bottom: 1px solid #e3e3e3; padding-bottom: .2rem; margin-top: 2rem; font-size: 1.15rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: .5rem 0; }
td, th { border-bottom: 1px solid #e5e5e5; padding: .2rem .8rem .2rem 0; text-align: left; vertical-align: top; }
th { font-weight: 600; }
td { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
tr.differs td { background: #fff8e1; }
.charts, .gallery { display: flex; flex-wrap: wrap; gap: 1rem 1.5rem; align-items: flex-start; }
figure { margin: 0; }
figcaption { color: #555; font-size: 12px; margin-top: .2rem; }
img { image-rendering: pixelated; border: 1px solid #eee; background: white; max-width: 100%; height: auto; }
img.chart { image-rendering: auto; border: 0; }
.warn { background: #fff3f3; border: 1px solid #e2a0a0; border-radius: 6px; padding: .6rem 1rem; }
.muted { color: #777; }
`;

/**
 * Render the HTML report of one run, or the overlay of several (metric charts then carry one
 * line per run, and the configuration table marks the keys whose values differ).
 *
 * @example
 * ```ts
 * import { renderReport } from "./report.ts";
 * import { strict as assert } from "node:assert";
 * const run = (name: string, k: number) => ({
 *   name, config: { lr: k }, records: [{ step: 1, loss: 1 / k }, { step: 2, loss: 0.1 / k }],
 *   skipped: [], images: [], checkpoints: [], environment: { backend: "cpu" },
 * });
 * const html = await renderReport([run("a", 1), run("b", 2)]);
 * assert.ok(html.includes("Comparison of 2 runs") && html.includes('class="differs"'));
 * ```
 */
export async function renderReport(
  runs: readonly ReportRun[],
  opts: ReportOptions = {},
): Promise<string> {
  if (runs.length === 0) throw new RangeError("Expected at least one run to report on");
  const many = runs.length > 1;
  const title = opts.title ?? (many ? `Comparison of ${runs.length} runs` : runs[0]!.name);
  const parts: string[] = [];
  const sections: [string, string][] = [];

  // What was skipped comes first: a reader must know the report is partial.
  const skipped = runs.flatMap((r) => r.skipped.map((s) => (many ? `${r.name}: ${s}` : s)));
  if (skipped.length) {
    parts.push(
      `<div class="warn" id="skipped"><strong>Some input was skipped.</strong><ul>${
        skipped.map((s) => `<li>${esc(s)}</li>`).join("")
      }</ul></div>`,
    );
  }

  // Environment.
  sections.push(["environment", "Environment"]);
  const envKeys = [...new Set(runs.flatMap((r) => Object.keys(r.environment)))];
  const envRows = envKeys.map((k) => [esc(k), ...runs.map((r) => esc(r.environment[k] ?? "—"))]);
  let env = envRows.length
    ? table(["", ...runs.map((r) => r.name)], envRows)
    : `<p class="muted">The run${many ? "s" : ""} did not record an environment.</p>`;
  if (opts.generatedIn) {
    env += `<h3>Report generated in</h3>` +
      table(["", ""], Object.entries(opts.generatedIn).map(([k, v]) => [esc(k), esc(v)]));
  }
  parts.push(`<h2 id="environment">Environment</h2>${env}`);

  // Configuration.
  sections.push(["config", "Configuration"]);
  const flat = runs.map((r) => (r.config ? flatten(r.config) : null));
  const cfgKeys = [...new Set(flat.flatMap((f) => (f ? Object.keys(f) : [])))];
  let cfg: string;
  if (cfgKeys.length === 0) cfg = `<p class="muted">No config.json.</p>`;
  else {
    const rows = cfgKeys.map((k) => {
      const vals = flat.map((f) => (f ? f[k] ?? "—" : "—"));
      const differs = many && new Set(vals).size > 1;
      return { differs, cells: [esc(k), ...vals.map(esc)] };
    });
    const head = ["Key", ...(many ? runs.map((r) => r.name) : ["Value"])];
    cfg = `<table><thead><tr>${
      head.map((h) => `<th>${esc(h)}</th>`).join("")
    }</tr></thead><tbody>${
      rows.map((r) =>
        `<tr${r.differs ? ' class="differs"' : ""}>${
          r.cells.map((c) => `<td>${c}</td>`).join("")
        }</tr>`
      ).join("\n")
    }</tbody></table>` + (many ? `<p class="muted">Highlighted rows differ between runs.</p>` : "");
  }
  parts.push(`<h2 id="config">Configuration</h2>${cfg}`);

  // Metric curves.
  sections.push(["metrics", "Metrics"]);
  const series = metricSeries(runs);
  const charts: string[] = [];
  for (const [key, ss] of series) {
    const log = wantsLog(ss);
    const svg = await lineChart(ss, {
      title: key,
      subtitle: log ? "log scale" : undefined,
      xTitle: "Step",
      yTitle: humanise(key),
      logY: log,
      legendTitle: many ? "Run" : undefined,
      width: many ? 460 : 420,
      height: 230,
    });
    charts.push(
      `<figure data-metric="${esc(key)}"><img class="chart" alt="${esc(key)}" ` +
        `src="data:image/svg+xml;base64,${base64(new TextEncoder().encode(svg))}"></figure>`,
    );
  }
  const nRecords = runs.map((r) => r.records.length).reduce((a, b) => a + b, 0);
  parts.push(
    `<h2 id="metrics">Metrics</h2>` +
      (charts.length
        ? `<p class="muted">${nRecords} records; ${series.size} metrics.</p><div class="charts">${
          charts.join("\n")
        }</div>`
        : `<p class="muted">No numeric metrics were logged.</p>`),
  );

  // Samples per checkpoint, GIFs, plots.
  const groups: [string, string, (i: ReportImage) => boolean][] = [
    ["samples", "Samples", (i) => i.path.startsWith("samples/") && !i.path.endsWith(".gif")],
    ["animations", "Animations", (i) => i.path.endsWith(".gif")],
    ["plots", "Plots", (i) => !i.path.startsWith("samples/") && !i.path.endsWith(".gif")],
  ];
  for (const [id, label, pick] of groups) {
    const blocks: string[] = [];
    for (const run of runs) {
      // A labelled figure (`step-N.svg`: upscaled, class names) stands in for its raw grid
      // (`step-N.png`) of the same name.
      const svgs = new Set(
        run.images.filter((i) => i.path.endsWith(".svg")).map((i) => i.path.slice(0, -4)),
      );
      const raw = (i: ReportImage) => i.path.endsWith(".png") && svgs.has(i.path.slice(0, -4));
      const imgs = run.images.filter((i) => pick(i) && !raw(i)).sort((a, b) =>
        (a.step ?? Infinity) - (b.step ?? Infinity) || a.path.localeCompare(b.path)
      );
      if (imgs.length === 0) continue;
      const ckpt = new Set(run.checkpoints.map((c) => c.step));
      const figs = imgs.map((i) => {
        const cap = i.step !== null
          ? `step ${i.step}${ckpt.has(i.step) ? " (checkpoint)" : ""} — ${i.path}`
          : i.path;
        return `<figure>${imgTag(i.bytes, `${run.name}: ${i.path}`)}<figcaption>${
          esc(cap)
        }</figcaption></figure>`;
      });
      blocks.push(
        (many ? `<h3>${esc(run.name)}</h3>` : "") + `<div class="gallery">${figs.join("\n")}</div>`,
      );
    }
    if (blocks.length) {
      sections.push([id, label]);
      parts.push(`<h2 id="${id}">${label}</h2>${blocks.join("\n")}`);
    }
  }

  // Checkpoints.
  sections.push(["checkpoints", "Checkpoints"]);
  const ck = runs.flatMap((r) =>
    r.checkpoints.map((c) => [
      ...(many ? [esc(r.name)] : []),
      esc(c.path),
      c.step === null ? "—" : String(c.step),
      `${(c.bytes / 1024).toFixed(1)} KiB`,
    ])
  );
  parts.push(
    `<h2 id="checkpoints">Checkpoints</h2>` +
      (ck.length
        ? table([...(many ? ["Run"] : []), "File", "Step", "Size"], ck)
        : `<p class="muted">No checkpoints.</p>`),
  );

  const nav = sections.map(([id, l]) => `<a href="#${id}">${l}</a>`).join("");
  const sub = many ? runs.map((r) => esc(r.name)).join(" · ") : "flowgpu training run";
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} — flowgpu report</title>
<link rel="icon" href="data:,">
<style>${CSS}</style>
</head>
<body>
<header><h1>${esc(title)}</h1><div class="muted">${sub}</div><nav>${nav}</nav></header>
<main>
${parts.join("\n")}
</main>
</body>
</html>
`;
}
