/**
 * @file `deno task eval` — sample a `train:cfm` checkpoint and score it against fresh data:
 * exact W2, histogram KL, RBF MMD, straightness of the sampled paths, and NFE. Prints one
 * JSON object and appends it to the run's `eval.jsonl` when the checkpoint is inside a run.
 *
 *   deno task eval --checkpoint runs/train-cfm-20260101-120000
 *   deno task eval --checkpoint run/checkpoints/last.safetensors --sampler dopri5 --metrics w2,nfe
 *   deno task eval --checkpoint run --sampler euler --num-steps 2 --metrics w2,kl
 * @module
 */
import {
  CFM_DATASETS,
  EVAL_METRICS,
  type EvalMetric,
  type EvalRecord,
  evaluateCfm,
  loadClassifier,
  Progress,
  readCfmCheckpoint,
  SAMPLER_METHODS,
  snakeKeys,
} from "../mod.ts";
import { type FlagSpec, parseTaskFlags, runTask } from "../cli/mod.ts";
import { flowMapCheckpointIn } from "./_flowmap.ts";
import { type FlowMapEvalRecord, main as evalFlowMap } from "./eval_flowmap.ts";

export { EVAL_METRICS, type EvalMetric, type EvalRecord } from "../mod.ts";

/** The shipped Fashion-MNIST classifier (assets/README.md gives the command that made it). */
export const DEFAULT_CLASSIFIER = "assets/classifier_fmnist.safetensors";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { EVAL_FLAGS } from "./eval.ts";
 * assert.equal(EVAL_FLAGS.find((f) => f.name === "num-samples")?.default, 2000);
 * ```
 */
export const EVAL_FLAGS = [
  { name: "checkpoint", type: "string", help: "checkpoint file, run directory or http(s) URL" },
  {
    name: "metrics",
    type: "string",
    help: `comma-separated: ${EVAL_METRICS.join(",")} (default all; images: w2,mmd,nfe,fd)`,
  },
  { name: "num-samples", type: "int", default: 2000, min: 2, help: "samples to score" },
  {
    name: "sampler",
    type: "choice",
    choices: SAMPLER_METHODS,
    default: "euler",
    help: "ODE/SDE sampler",
  },
  { name: "num-steps", type: "int", default: 100, min: 1, help: "fixed-step sampler steps" },
  { name: "atol", type: "number", default: 1e-5, min: 0, help: "dopri5 absolute tolerance" },
  { name: "rtol", type: "number", default: 1e-5, min: 0, help: "dopri5 relative tolerance" },
  {
    name: "dataset",
    type: "choice",
    choices: CFM_DATASETS,
    help: "reference data (default: the checkpoint's)",
  },
  { name: "kl-bins", type: "int", default: 25, min: 2, help: "histogram bins per axis for kl" },
  { name: "use-ema", type: "bool", default: true, help: "sample with the EMA weights" },
  { name: "seed", type: "int", default: 0, min: 0, help: "seed of noise and reference data" },
  {
    name: "classifier",
    type: "string",
    default: DEFAULT_CLASSIFIER,
    help: "train:classifier checkpoint for fd and class-acc",
  },
  { name: "cfg-scale", type: "number", default: 1, min: 0, help: "guidance (class-conditional)" },
] as const satisfies readonly FlagSpec[];

/**
 * Parse a `--metrics` list; unknown names raise a `RangeError` listing the valid ones.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseMetrics } from "./eval.ts";
 * assert.deepEqual(parseMetrics("w2, nfe,w2"), ["w2", "nfe"]);
 * ```
 */
export function parseMetrics(list: string): EvalMetric[] {
  const names = list.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (names.length === 0) {
    throw new RangeError(`Expected --metrics to name at least one of ${EVAL_METRICS.join(", ")}`);
  }
  for (const n of names) {
    if (!(EVAL_METRICS as readonly string[]).includes(n)) {
      throw new RangeError(
        `Unknown metric "${n}" in --metrics: expected a comma-separated list of ${
          EVAL_METRICS.join(", ")
        }`,
      );
    }
  }
  return [...new Set(names)] as EvalMetric[];
}

/**
 * Run the task; prints and returns the record (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./eval.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<EvalRecord | null> {
  const f = parseTaskFlags(argv, EVAL_FLAGS, {
    task: "eval",
    usage: "Sample a train:cfm checkpoint and score it against fresh data; prints one JSON object.",
  });
  if (!f) return null;
  if (f.checkpoint === undefined) {
    throw new RangeError("Expected --checkpoint (a checkpoint file, run directory or URL)");
  }
  const given = f.metrics === undefined ? undefined : parseMetrics(f.metrics);
  const ck = await readCfmCheckpoint(f.checkpoint);
  const images = ck.config.dataset === "fashion-mnist";
  const metrics = given ??
    (images
      ? ["w2", "mmd", "nfe", "fd", ...(ck.config.numClasses > 0 ? ["class-acc" as const] : [])]
      : EVAL_METRICS.filter((m) => m !== "fd" && m !== "class-acc")) as EvalMetric[];
  const clf = metrics.includes("fd") || metrics.includes("class-acc")
    ? await loadClassifier(f.classifier)
    : null;
  let progress: Progress | undefined;
  const rec = await evaluateCfm(ck, {
    metrics,
    numSamples: f.numSamples,
    sampler: f.sampler,
    numSteps: f.numSteps,
    atol: f.atol,
    rtol: f.rtol,
    dataset: f.dataset,
    klBins: f.klBins,
    useEma: f.useEma,
    seed: f.seed,
    classifier: clf?.model,
    cfgScale: f.cfgScale,
    // One progress line per stage (sampling, reference data, each metric), the first at once.
    onStage: (stage, done, count) => {
      if (done === 0) {
        progress = new Progress(count, { label: "eval", unit: "stage", every: 1 });
        progress.start(stage!);
      } else if (stage === null) {
        progress!.update(done);
        progress!.done();
      } else progress!.update(done, { next: stage });
    },
  }).finally(() => clf?.model.dispose());
  if (clf) rec.classifier = clf.path;
  // The seeds' key spelling (snake_case) in the printed line and eval.jsonl.
  const line = JSON.stringify(snakeKeys(rec as unknown as Record<string, unknown>));
  console.log(line);
  if (ck.runDir) {
    const path = `${ck.runDir}/eval.jsonl`;
    try {
      await Deno.writeTextFile(path, line + "\n", { append: true, create: true });
    } catch (e) {
      // The record is already printed; a read-only run directory only loses the log line.
      console.warn(`eval: could not append to ${path}: ${(e as Error).message}`);
    }
  }
  return rec;
}

/**
 * `deno task eval`: a `train:flowmap` checkpoint gets seed 004's KL table
 * (tasks/eval_flowmap.ts), any other checkpoint {@linkcode main}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { evalAny } from "./eval.ts";
 * assert.equal(await evalAny(["--help"]), null);
 * ```
 */
export async function evalAny(
  argv: readonly string[],
): Promise<EvalRecord | FlowMapEvalRecord | null> {
  const fm = await flowMapCheckpointIn(argv);
  return fm ? await evalFlowMap(argv, fm) : await main(argv);
}

if (import.meta.main) await runTask("eval", evalAny);
