/**
 * @file Run directories: `runs/<task>-<YYYYMMDD-HHMMSS>/` (or `--output-dir/--exp-name`)
 * with `config.json`, an append-only `metrics.jsonl`, `checkpoints/`, `samples/` and
 * `plots/`. Every line of metrics is written (and closed) on its own, so a crash loses at
 * most the line being written; `readMetrics` skips a torn last line.
 * @module
 */
import { atomicWrite, exists, joinPath } from "../formats/fs.ts";
import { denoApi, isNotFound } from "../_util.ts";

const IN_MEMORY = "keep metrics and files in memory";
import { CheckpointManager } from "./checkpoint.ts";

/** Options of {@linkcode createRun}. */
export interface CreateRunOptions {
  /** Parent directory (default `runs`). */
  outputDir?: string;
  /** Directory name (default `<task>-<YYYYMMDD-HHMMSS>`). */
  expName?: string;
  /** The run configuration, written to `config.json` (must be JSON-serialisable). */
  config?: unknown;
  /** Checkpoints to keep (default 3). */
  keepCheckpoints?: number;
}

/**
 * An open run directory.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createRun, openRun } from "../../mod.ts";
 * const tmp = await Deno.makeTempDir();
 * const run = await createRun("toy", { outputDir: tmp, config: { lr: 0.01 } });
 * await run.logMetrics(1, { "training/loss_flow": 0.5 });
 * const again = await openRun(run.dir);
 * const rows = await again.readMetrics();
 * assert.equal(rows.length, 1);
 * assert.equal(rows[0]!["training/loss_flow"], 0.5);
 * await Deno.remove(tmp, { recursive: true });
 * ```
 */
export class Run {
  /** The run directory. */
  readonly dir: string;
  /** The configuration stored in `config.json`. */
  readonly config: unknown;
  /** Checkpoint manager on `<dir>/checkpoints`. */
  readonly checkpoints: CheckpointManager;
  /** `<dir>/samples`. */
  readonly samplesDir: string;
  /** `<dir>/plots`. */
  readonly plotsDir: string;
  /** `<dir>/metrics.jsonl`. */
  readonly metricsPath: string;

  /** @internal Use {@linkcode createRun} or {@linkcode openRun}. */
  constructor(dir: string, config: unknown, keep = 3) {
    this.dir = dir;
    this.config = config;
    this.checkpoints = new CheckpointManager(joinPath(dir, "checkpoints"), { keep });
    this.samplesDir = joinPath(dir, "samples");
    this.plotsDir = joinPath(dir, "plots");
    this.metricsPath = joinPath(dir, "metrics.jsonl");
  }

  /** A path inside the run directory. */
  path(rel: string): string {
    return joinPath(this.dir, rel);
  }

  /**
   * Append `{step, ...record}` as one JSON line to `metrics.jsonl` (opened, appended and
   * closed per call, so the line is in the file when this resolves). Non-finite numbers
   * are written as `null`, since JSON has no NaN.
   */
  async logMetrics(step: number, record: Record<string, unknown>): Promise<void> {
    if (!Number.isInteger(step) || step < 0) {
      throw new RangeError(`Expected metrics step to be an integer >= 0 but found ${step}`);
    }
    const line = JSON.stringify({ step, ...record }) + "\n";
    await denoApi("Run.logMetrics", IN_MEMORY).writeTextFile(this.metricsPath, line, {
      append: true,
      create: true,
    });
  }

  /** Every record in `metrics.jsonl` (a torn last line from a crash is skipped). */
  async readMetrics(): Promise<Record<string, unknown>[]> {
    return await readMetrics(this.metricsPath);
  }

  /** Write a file under the run directory atomically; returns its path. */
  async writeFile(rel: string, data: Uint8Array | string): Promise<string> {
    if (
      typeof rel !== "string" || rel === "" || rel.startsWith("/") || rel.split("/").includes("..")
    ) {
      throw new RangeError(`Expected a relative path inside the run directory but found "${rel}"`);
    }
    const p = this.path(rel);
    await atomicWrite(p, data);
    return p;
  }
}

function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${
    p(d.getMinutes())
  }${p(d.getSeconds())}`;
}

/**
 * A record with its top-level keys in snake_case (`maxTrainSteps` → `max_train_steps`), the
 * spelling of the seeds' configs, used for `config.json` and `eval.jsonl`. Values are kept as
 * they are; a key without capitals is unchanged.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { snakeKeys } from "../../mod.ts";
 * assert.deepEqual(snakeKeys({ maxTrainSteps: 5, dataShape: [2], w2: 1 }),
 *   { max_train_steps: 5, data_shape: [2], w2: 1 });
 * ```
 */
export function snakeKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(o).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase()), v]),
  );
}

/**
 * The inverse of {@linkcode snakeKeys} (`max_train_steps` → `maxTrainSteps`): how the code
 * reads `config.json`. camelCase keys pass through unchanged, so configs written before the
 * switch still load.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { camelKeys, snakeKeys } from "../../mod.ts";
 * const c = { maxTrainSteps: 5, useEMA: true, x0Std: 1 };
 * assert.deepEqual(camelKeys(snakeKeys(c)), c); // round trip
 * assert.deepEqual(camelKeys({ batchSize: 8 }), { batchSize: 8 });
 * ```
 */
export function camelKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(o).map(([k, v]) => [k.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase()), v]),
  );
}

const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x);

/**
 * The text of a `config.json`: the config with snake_case keys (see {@linkcode snakeKeys}),
 * pretty-printed, ending in a newline. Throws a TypeError for a config JSON cannot hold.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { configFileText } from "../../mod.ts";
 * assert.equal(configFileText({ batchSize: 8 }), '{\n  "batch_size": 8\n}\n');
 * ```
 */
export function configFileText(config: unknown): string {
  const json = JSON.stringify(isRecord(config) ? snakeKeys(config) : config, null, 2);
  if (json === undefined) throw new TypeError("Expected run config to be JSON-serialisable");
  return json + "\n";
}

/**
 * Parse the text of a `config.json` into the in-memory (camelCase) config.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseConfigFile } from "../../mod.ts";
 * assert.deepEqual(parseConfigFile('{"max_train_steps": 3}'), { maxTrainSteps: 3 });
 * ```
 */
export function parseConfigFile(text: string): unknown {
  const c = JSON.parse(text);
  return isRecord(c) ? camelKeys(c) : c;
}

/**
 * Create a new run directory and write its `config.json` atomically. Refuses to reuse a
 * directory that already holds a run (use {@linkcode openRun} to resume one).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createRun } from "../../mod.ts";
 * const tmp = await Deno.makeTempDir();
 * const run = await createRun("train:stablevm", { outputDir: tmp, expName: "demo", config: { seed: 0 } });
 * await run.writeFile("samples/note.txt", "hi");
 * assert.equal(await Deno.readTextFile(`${run.dir}/samples/note.txt`), "hi");
 * assert.equal(JSON.parse(await Deno.readTextFile(`${run.dir}/config.json`)).seed, 0);
 * await Deno.remove(tmp, { recursive: true });
 * ```
 */
export async function createRun(task: string, opts: CreateRunOptions = {}): Promise<Run> {
  if (typeof task !== "string" || !/^[\w.:-]+$/.test(task)) {
    throw new RangeError(`Expected task name to be letters, digits, "_-.:" but found "${task}"`);
  }
  const base = opts.outputDir ?? "runs";
  let dir: string;
  if (opts.expName !== undefined) {
    if (!/^[^/\\]+$/.test(opts.expName) || opts.expName === "." || opts.expName === "..") {
      throw new RangeError(
        `Expected exp name to be a plain directory name but found "${opts.expName}"`,
      );
    }
    dir = joinPath(base, opts.expName);
  } else {
    const stem = `${task.replace(/:/g, "-")}-${timestamp()}`;
    dir = joinPath(base, stem);
    for (let k = 2; await exists(dir); k++) dir = joinPath(base, `${stem}-${k}`);
  }
  if (await exists(joinPath(dir, "config.json"))) {
    throw new RangeError(
      `Run directory ${dir} already holds a run; pass --resume to continue it or choose another --exp-name`,
    );
  }
  const config = opts.config ?? {};
  const json = configFileText(config);
  const fs = denoApi("createRun", IN_MEMORY);
  await fs.mkdir(joinPath(dir, "samples"), { recursive: true });
  await fs.mkdir(joinPath(dir, "plots"), { recursive: true });
  await atomicWrite(joinPath(dir, "config.json"), json);
  return new Run(dir, config, opts.keepCheckpoints ?? 3);
}

/**
 * Re-open an existing run directory (for `--resume`): reads `config.json`; metrics are
 * appended to the existing `metrics.jsonl`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createRun, openRun } from "../../mod.ts";
 * const tmp = await Deno.makeTempDir();
 * const a = await createRun("toy", { outputDir: tmp, config: { steps: 5 } });
 * const b = await openRun(a.dir);
 * assert.equal(b.dir, a.dir);
 * assert.equal((b.config as { steps: number }).steps, 5);
 * await Deno.remove(tmp, { recursive: true });
 * ```
 */
export async function openRun(dir: string, opts: { keepCheckpoints?: number } = {}): Promise<Run> {
  const p = joinPath(dir, "config.json");
  const fs = denoApi("openRun", IN_MEMORY);
  let text: string;
  try {
    text = await fs.readTextFile(p);
  } catch (e) {
    if (isNotFound(e)) {
      throw new RangeError(`Expected a run directory with config.json but ${p} does not exist`);
    }
    throw e;
  }
  let config: unknown;
  try {
    config = parseConfigFile(text);
  } catch (e) {
    throw new RangeError(`${p}: config.json is not valid JSON (${(e as Error).message})`);
  }
  await fs.mkdir(joinPath(dir, "samples"), { recursive: true });
  await fs.mkdir(joinPath(dir, "plots"), { recursive: true });
  return new Run(dir, config, opts.keepCheckpoints ?? 3);
}

/**
 * Read a `metrics.jsonl` file into records; a torn (unparseable) last line, as a crash
 * mid-write can leave, is skipped; a bad line elsewhere raises a `RangeError`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readMetrics } from "../../mod.ts";
 * const tmp = await Deno.makeTempFile();
 * // A run killed mid-write leaves a partial last line: it is skipped.
 * await Deno.writeTextFile(tmp, '{"step":1,"loss":0.5}\n{"step":2,"lo');
 * assert.deepEqual(await readMetrics(tmp), [{ step: 1, loss: 0.5 }]);
 * await Deno.remove(tmp);
 * ```
 */
export async function readMetrics(path: string): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await denoApi("readMetrics", "parse the JSON lines yourself").readTextFile(path);
  } catch (e) {
    if (isNotFound(e)) return [];
    throw e;
  }
  const lines = text.split("\n");
  const out: Record<string, unknown>[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    try {
      out.push(JSON.parse(line));
    } catch {
      const last = lines.slice(i + 1).every((l) => l.trim() === "");
      if (!last) throw new RangeError(`${path}: line ${i + 1} is not valid JSON`);
    }
  });
  return out;
}
