/**
 * @file Starting or continuing a training run before its trainer exists: a fresh run gets
 * a new directory with `config.json`; `--resume <run dir or checkpoint>` reopens the run
 * and its stored configuration wins, except for the schedule keys (step budget, log,
 * checkpoint and sample cadence) the user gave explicitly now. Keys not given keep the
 * run's values, so a resumed run keeps its schedule instead of falling back to defaults.
 * Either way the session's environment (backend, adapter, Deno, OS, commit) goes to the run's
 * `env.json`: a fresh run's at its top level, each resumed session's appended to `resumes`.
 * @module
 */
import { createRun, openRun, type Run } from "../io/mod.ts";
import { denoApi, isNotFound } from "../_util.ts";
import { runEnvironment } from "./env.ts";

/** Options of {@linkcode openTrainingRun}. */
export interface TrainingRunSpec<C extends object> {
  /** Task name, stored as `config.task` and checked on resume (e.g. `train:cfm`). */
  task: string;
  /** The configuration from this invocation's flags (defaults filled in). */
  config: C;
  /** A run directory, or a `.safetensors` checkpoint inside one, to continue; else null. */
  resume?: string | null;
  /** Config keys the user gave explicitly (e.g. from `parseFlags(…, { given })`). */
  given?: ReadonlySet<string>;
  /** Keys a resumed run takes from `config` when given (its schedule); others are kept. */
  schedule?: readonly (keyof C & string)[];
  /** Parent directory of a new run (default `runs`). */
  outputDir?: string;
  /** Name of a new run's directory (default `<task>-<time>`). */
  expName?: string | null;
  /** Where the "ignoring --flag" notice goes (default console.warn). */
  warn?: (msg: string) => void;
}

/** What {@linkcode openTrainingRun} returns. */
export interface TrainingRun<C> {
  /** The run directory. */
  run: Run;
  /** The effective configuration (stored one plus schedule overrides when resuming). */
  config: C;
  /** What to pass as `fit`'s `resume`: a checkpoint path, true (newest) or null (fresh). */
  resume: string | true | null;
}

/** A `--resume` path that is not a checkpoint must be a directory: say so, naming it. */
async function expectDirectory(given: string, dir: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await denoApi("--resume", "start a new run").stat(dir);
  } catch (e) {
    if (isNotFound(e)) {
      throw new RangeError(`--resume ${given}: no such run directory or checkpoint`, { cause: e });
    }
    throw e;
  }
  if (!info.isDirectory) {
    throw new RangeError(
      `--resume ${given}: expected a run directory or a .safetensors checkpoint, but it is a file`,
    );
  }
}

const kebab = (k: string) => k.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`);

/**
 * Create a run (fresh) or reopen one (resume) and settle its configuration.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { openTrainingRun } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const a = await openTrainingRun({
 *   task: "toy", config: { lr: 0.1, maxSteps: 10, logEvery: 5 }, outputDir: dir, expName: "a",
 * });
 * assert.equal(a.resume, null);
 * // The run records where it ran.
 * const env = JSON.parse(await Deno.readTextFile(`${a.run.dir}/env.json`));
 * assert.equal(env.deno, Deno.version.deno);
 * // Resuming with a new budget: the stored lr and log cadence are kept.
 * const b = await openTrainingRun({
 *   task: "toy", config: { lr: 0.5, maxSteps: 20, logEvery: 100 }, resume: a.run.dir,
 *   given: new Set(["maxSteps"]), schedule: ["maxSteps", "logEvery"],
 * });
 * assert.deepEqual(b.config, { task: "toy", lr: 0.1, maxSteps: 20, logEvery: 5 });
 * assert.equal(b.resume, true);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function openTrainingRun<C extends object>(
  spec: TrainingRunSpec<C>,
): Promise<TrainingRun<C>> {
  const config = { task: spec.task, ...spec.config } as C;
  if (!spec.resume) {
    const run = await createRun(spec.task, {
      outputDir: spec.outputDir,
      expName: spec.expName ?? undefined,
      config,
    });
    await run.writeFile("env.json", JSON.stringify(runEnvironment(), null, 2) + "\n");
    return { run, config, resume: null };
  }
  let dir = spec.resume.replace(/\/+$/, "");
  let resume: string | true = true;
  // The run's config.json names its run (pasted from a file listing): take its directory.
  if (/(^|\/)config\.json$/.test(dir)) dir = dir.replace(/\/?config\.json$/, "") || ".";
  else if (!dir.endsWith(".safetensors")) await expectDirectory(spec.resume, dir);
  if (dir.endsWith(".safetensors")) {
    resume = dir;
    dir = dir.replace(/\/?checkpoints\/[^/]+$/, "") || ".";
    if (dir === resume) dir = ".";
  }
  const run = await openRun(dir);
  const stored = run.config as Record<string, unknown> | null;
  if (!stored || typeof stored !== "object") {
    throw new RangeError(`--resume ${spec.resume}: ${dir}/config.json holds no configuration`);
  }
  if (stored.task !== undefined && stored.task !== spec.task) {
    throw new RangeError(
      `--resume ${spec.resume}: ${dir} is a ${stored.task} run, not a ${spec.task} run`,
    );
  }
  const given = spec.given ?? new Set<string>();
  const schedule = new Set<string>(spec.schedule ?? []);
  const merged: Record<string, unknown> = { ...stored, task: spec.task };
  const ignored: string[] = [];
  for (const k of given) {
    if (!(k in (spec.config as object))) continue;
    if (schedule.has(k)) merged[k] = (spec.config as Record<string, unknown>)[k];
    else if (k !== "resume") ignored.push(`--${kebab(k)}`);
  }
  if ("resume" in (spec.config as object)) merged.resume = spec.resume;
  if (ignored.length) {
    (spec.warn ?? console.warn)(
      `${spec.task}: --resume keeps the run's config.json; ignoring ${ignored.join(", ")}`,
    );
  }
  await recordResume(run);
  return { run, config: merged as C, resume };
}

/** Append this session's environment to `env.json`'s `resumes` (or start the file). */
async function recordResume(run: Run): Promise<void> {
  const now = runEnvironment();
  let env: Record<string, unknown> | null = null;
  try {
    const v = JSON.parse(
      await denoApi("openTrainingRun", "record the environment yourself").readTextFile(
        run.path("env.json"),
      ),
    );
    if (v && typeof v === "object" && !Array.isArray(v)) env = v;
  } catch { /* missing or unreadable: this session's environment starts the file */ }
  const out = env
    ? { ...env, resumes: [...(Array.isArray(env.resumes) ? env.resumes : []), now] }
    : { ...now, resumedRun: true };
  await run.writeFile("env.json", JSON.stringify(out, null, 2) + "\n");
}
