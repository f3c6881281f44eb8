/**
 * @file `deno task report <run-dir>` — write `<run-dir>/report.html`, a self-contained page
 * with the run's configuration, metric curves, samples per checkpoint, GIFs, plots,
 * checkpoints and environment. `deno task compare <run-dir> <run-dir>…` overlays several runs
 * in one page (`--out`, default `compare.html` beside the first run).
 *
 *   deno task report runs/train-cfm-20260101-120000
 *   deno task compare runs/a runs/b --out /tmp/ab.html
 *
 * Exit status 2 when an argument is not a run directory (no config.json or metrics.jsonl);
 * a torn or corrupt line of metrics.jsonl is skipped and listed at the top of the report.
 * @module
 */
import { type FlagSpec, parseFlags } from "../cli/mod.ts";
import { parseJsonl, renderReport, type ReportImage, type ReportRun } from "../viz/report.ts";
import { currentEnvironment, isNotFound, listFiles, stepOf } from "./_report_files.ts";

export { currentEnvironment } from "./_report_files.ts";

/**
 * An argument that is not a run directory (exit status 2).
 *
 * @example
 * ```ts
 * import { NotARunError, readRunDir } from "./report.ts";
 * import { strict as assert } from "node:assert";
 * await assert.rejects(() => readRunDir("./no-such-run"), NotARunError);
 * ```
 */
export class NotARunError extends RangeError {
  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "NotARunError";
  }
}

const ENV_KEYS = ["backend", "adapter", "device", "commit", "gitCommit", "deno", "denoVersion"];

/**
 * Read what a report shows from a run directory. Throws {@linkcode NotARunError} when `dir`
 * is missing, not a directory, or has neither `config.json` nor `metrics.jsonl`.
 *
 * @example
 * ```ts
 * import { readRunDir } from "./report.ts";
 * import { strict as assert } from "node:assert";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/config.json`, '{"lr":0.1}');
 * await Deno.writeTextFile(`${dir}/metrics.jsonl`, '{"step":1,"loss":2}\n{"step":2,"lo');
 * const run = await readRunDir(dir);
 * assert.equal(run.records.length, 1);
 * assert.equal(run.skipped.length, 1);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readRunDir(dir: string): Promise<ReportRun> {
  dir = dir.replace(/\/+$/, "") || "/";
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    if (isNotFound(e)) throw new NotARunError(`${dir} does not exist`);
    throw e;
  }
  if (!info.isDirectory) throw new NotARunError(`${dir} is a file, not a run directory`);
  const top = await listFiles(dir, 0);
  const jsonl = top.filter((f) => f === "metrics.jsonl" || /^eval.*\.jsonl$/.test(f));
  if (!top.includes("config.json") && !top.includes("metrics.jsonl")) {
    throw new NotARunError(
      `${dir} is not a run directory: it has neither config.json nor metrics.jsonl ` +
        `(a run is what 'deno task train:…' writes under runs/)`,
    );
  }
  const skipped: string[] = [];
  let config: Record<string, unknown> | null = null;
  if (top.includes("config.json")) {
    try {
      const c = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      if (c && typeof c === "object" && !Array.isArray(c)) config = c;
      else skipped.push("config.json: not a JSON object; skipped");
    } catch (e) {
      skipped.push(`config.json: ${(e as Error).message}; skipped`);
    }
  } else skipped.push("config.json: missing");
  const records: Record<string, unknown>[] = [];
  for (const f of jsonl) {
    const r = parseJsonl(await Deno.readTextFile(`${dir}/${f}`), f);
    records.push(...r.records);
    skipped.push(...r.skipped);
  }
  records.sort((a, b) => (Number(a.step) || 0) - (Number(b.step) || 0));
  const images: ReportImage[] = [];
  for (const sub of ["samples", "plots"]) {
    for (const f of await listFiles(`${dir}/${sub}`)) {
      if (!/\.(png|gif|svg)$/i.test(f)) continue;
      const path = `${sub}/${f}`;
      const bytes = await Deno.readFile(`${dir}/${path}`);
      images.push({ path, step: stepOf(f), bytes });
    }
  }
  const checkpoints = [];
  for (const f of await listFiles(`${dir}/checkpoints`, 0)) {
    if (!f.endsWith(".safetensors")) continue;
    const st = await Deno.stat(`${dir}/checkpoints/${f}`);
    checkpoints.push({ path: `checkpoints/${f}`, bytes: st.size, step: stepOf(f) });
  }
  const environment: Record<string, string> = {};
  const put = (o: unknown) => {
    if (!o || typeof o !== "object") return;
    for (const [k, v] of Object.entries(o)) {
      environment[k] = typeof v === "string" ? v : JSON.stringify(v);
    }
  };
  if (config) {
    put(config.environment ?? config.env);
    for (const k of ENV_KEYS) if (k in config) put({ [k]: config[k] });
  }
  if (top.includes("env.json")) {
    try {
      put(JSON.parse(await Deno.readTextFile(`${dir}/env.json`)));
    } catch (e) {
      skipped.push(`env.json: ${(e as Error).message}; skipped`);
    }
  }
  const name = dir.split("/").filter(Boolean).pop() ?? dir;
  return { name, config, records, skipped, images, checkpoints, environment };
}

const FLAGS = [
  { name: "out", type: "string", help: "output file (default <run>/report.html, compare.html)" },
] as const satisfies readonly FlagSpec[];

/**
 * Run the task: `compare` false → one run, true → several. Returns the exit status (0, or 2
 * for bad input) after printing the report's path or the error.
 *
 * @example
 * ```ts
 * import { main } from "./report.ts";
 * import { strict as assert } from "node:assert";
 * const dir = await Deno.makeTempDir();
 * assert.equal(await main([dir], false), 2); // an empty directory is not a run
 * await Deno.writeTextFile(`${dir}/config.json`, '{"lr":0.1}');
 * assert.equal(await main([dir], false), 0);
 * assert.ok((await Deno.readTextFile(`${dir}/report.html`)).includes("lr"));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function main(argv: readonly string[], compare: boolean): Promise<number> {
  const task = compare ? "compare" : "report";
  try {
    const f = parseFlags(argv, FLAGS, {
      task,
      positionals: true,
      usage: compare
        ? "Overlay several runs in one HTML report: deno task compare <run-dir> <run-dir>…"
        : "Write <run-dir>/report.html: deno task report <run-dir>",
    });
    if (!f) return 0;
    const dirs = f._;
    if (dirs.length === 0 || (!compare && dirs.length > 1)) {
      throw new NotARunError(
        compare ? "Expected one or more run directories" : "Expected exactly one run directory",
      );
    }
    const runs = [];
    for (const d of dirs) runs.push(await readRunDir(d));
    const names = runs.map((r) => r.name);
    runs.forEach((r, i) => {
      if (names.indexOf(r.name) !== i) r.name = dirs[i]!;
    });
    const html = await renderReport(runs, { generatedIn: await currentEnvironment() });
    const parent = dirs[0]!.replace(/\/+$/, "").replace(/\/[^/]*$/, "") || ".";
    const out = f.out ??
      (compare ? `${parent}/compare.html` : `${dirs[0]!.replace(/\/+$/, "")}/report.html`);
    const tmp = `${out}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.writeTextFile(tmp, html);
    await Deno.rename(tmp, out);
    const skipped = runs.reduce((n, r) => n + r.skipped.length, 0);
    console.log(
      `${task}: wrote ${out}${skipped ? ` (${skipped} input problem(s) listed at its top)` : ""}`,
    );
    for (const r of runs) for (const s of r.skipped) console.error(`${task}: ${r.name}: ${s}`);
    return 0;
  } catch (e) {
    if (e instanceof RangeError || e instanceof TypeError) {
      console.error(`${task}: ${e.message}`);
      return 2;
    }
    if (e instanceof Error && e.name === "NotCapable") {
      console.error(
        `${task}: ${e.message}. 'deno task ${task}' may read . and /tmp and write runs/ and /tmp; ` +
          `elsewhere run: deno run --allow-read=<dir> --allow-write=<dir> --allow-run=git tasks/${task}.ts …`,
      );
      return 2;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args, false));
