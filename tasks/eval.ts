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
  Generator,
  histogramKL,
  loadFashionMnist,
  mmdRbf,
  SAMPLER_METHODS,
  type SamplerMethod,
  sampleToy,
  straightness,
  w2,
} from "../mod.ts";
import { type FlagSpec, parseFlags } from "../cli/mod.ts";
import {
  CFM_DATASETS,
  type CfmDataset,
  disposeRecorded,
  generateSamples,
  type LoadedCheckpoint,
  modelFromCheckpoint,
  resolveCheckpoint,
} from "./_train_loop.ts";
import { flowMapCheckpointIn } from "./_flowmap.ts";
import { type FlowMapEvalRecord, main as evalFlowMap } from "./eval_flowmap.ts";

/**
 * Metric names `--metrics` accepts.
 *
 * @example
 * ```ts
 * import { EVAL_METRICS } from "./eval.ts";
 * console.log(EVAL_METRICS.join(",")); // w2,kl,mmd,straightness,nfe
 * ```
 */
export const EVAL_METRICS = ["w2", "kl", "mmd", "straightness", "nfe"] as const;
/** A metric name. */
export type EvalMetric = typeof EVAL_METRICS[number];

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { EVAL_FLAGS } from "./eval.ts";
 * console.log(EVAL_FLAGS.find((f) => f.name === "num-samples")?.default); // 2000
 * ```
 */
export const EVAL_FLAGS = [
  { name: "checkpoint", type: "string", help: "checkpoint file, run directory or http(s) URL" },
  {
    name: "metrics",
    type: "string",
    help: `comma-separated: ${EVAL_METRICS.join(",")} (default all; images: w2,mmd,nfe)`,
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
] as const satisfies readonly FlagSpec[];

/**
 * Parse a `--metrics` list; unknown names raise a `RangeError` listing the valid ones.
 *
 * @example
 * ```ts
 * import { parseMetrics } from "./eval.ts";
 * console.log(parseMetrics("w2, nfe,w2")); // ["w2", "nfe"]
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

/** Options of {@linkcode evaluate}. */
export interface EvaluateOptions {
  /** Metrics to compute. */
  metrics: readonly EvalMetric[];
  /** Samples (and reference points). */
  numSamples: number;
  /** Sampler. */
  sampler: SamplerMethod;
  /** Fixed-step sampler steps. */
  numSteps: number;
  /** dopri5 tolerances. */
  atol?: number;
  /** dopri5 relative tolerance. */
  rtol?: number;
  /** Reference dataset (default the checkpoint's). */
  dataset?: CfmDataset;
  /** Histogram bins per axis. */
  klBins?: number;
  /** Use the EMA weights (default true). */
  useEma?: boolean;
  /** Seed of the noise; the reference data use `seed + 1000003`. */
  seed: number;
}

/** One evaluation record. */
export interface EvalRecord {
  checkpoint: string;
  step: number;
  dataset: CfmDataset;
  sampler: SamplerMethod;
  numSteps: number | null;
  numSamples: number;
  seed: number;
  useEma: boolean;
  w2?: number;
  kl?: number;
  mmd?: number;
  straightness?: number;
  lengthRatio?: number;
  nfe?: number;
}

async function referenceData(
  dataset: CfmDataset,
  n: number,
  seed: number,
): Promise<Float32Array> {
  if (dataset === "fashion-mnist") {
    const ds = await loadFashionMnist({ split: "test", limit: n });
    if (ds.n < n) {
      throw new RangeError(`Expected --num-samples <= ${ds.n} for fashion-mnist but found ${n}`);
    }
    return ds.images;
  }
  const t = sampleToy(dataset, n, new Generator(seed + 1000003));
  try {
    return await t.data();
  } finally {
    t.dispose();
  }
}

/**
 * The square histogram range: the reference data's extent plus 5%. It depends on the data
 * only, so every model evaluated with the same seed is binned on the same grid.
 */
function dataRange(ref: Float32Array): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (const v of ref) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const pad = 0.05 * (hi - lo || 1);
  return [lo - pad, hi + pad];
}

/**
 * Score samples of a loaded checkpoint (see {@linkcode resolveCheckpoint}). Histogram KL is KL(data ‖ model) on a
 * `klBins`² grid over the data's range (5% margin), with 1e-4 added to every model bin so
 * empty bins cost log(p/1e-4) rather than infinity.
 *
 * @example
 * ```ts
 * import { buildModel } from "./_train_loop.ts";
 * import { evaluate } from "./eval.ts";
 * const config = { task: "train:cfm", dataset: "moons" as const, model: "velocity-mlp" as const, hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 };
 * const checkpoint = { model: buildModel(config).stateDict(), step: 0 };
 * const r = await evaluate({ path: "mem", runDir: null, config, checkpoint }, {
 *   metrics: ["nfe", "kl"], numSamples: 16, sampler: "midpoint", numSteps: 2, seed: 0,
 * });
 * console.log(r.nfe, r.kl! > 0); // 4 true
 * ```
 */
export async function evaluate(ck: LoadedCheckpoint, o: EvaluateOptions): Promise<EvalRecord> {
  const dataset = o.dataset ?? ck.config.dataset;
  const twoD = ck.config.dataShape.length === 1 && ck.config.dataShape[0] === 2;
  if (o.metrics.includes("kl") && !twoD) {
    throw new RangeError(
      `--metrics kl needs 2-D data but the model's samples have shape [${ck.config.dataShape}]`,
    );
  }
  if (dataset === "fashion-mnist" !== (ck.config.dataset === "fashion-mnist")) {
    throw new RangeError(
      `--dataset ${dataset} does not match the checkpoint's data (${ck.config.dataset})`,
    );
  }
  const useEma = o.useEma ?? true;
  const model = modelFromCheckpoint(ck, useEma);
  const record = o.metrics.includes("straightness");
  let gen;
  try {
    gen = await generateSamples(model, ck.config.dataShape, {
      n: o.numSamples,
      sampler: o.sampler,
      steps: o.numSteps,
      seed: o.seed,
      atol: o.atol,
      rtol: o.rtol,
      record,
    });
  } finally {
    model.dispose();
  }
  const out: EvalRecord = {
    checkpoint: ck.path,
    step: ck.checkpoint.step,
    dataset,
    sampler: o.sampler,
    numSteps: o.sampler === "dopri5" ? null : o.numSteps,
    numSamples: o.numSamples,
    seed: o.seed,
    useEma,
  };
  try {
    const dim = gen.x.length / o.numSamples;
    const needRef = o.metrics.some((m) => m === "w2" || m === "kl" || m === "mmd");
    const ref = needRef ? await referenceData(dataset, o.numSamples, o.seed) : null;
    for (const m of o.metrics) {
      if (m === "w2") out.w2 = await w2(ref!, gen.x, { dim });
      else if (m === "kl") {
        out.kl = histogramKL(ref!, gen.x, {
          bins: o.klBins ?? 25,
          range: dataRange(ref!),
          eps: 1e-4,
        });
      } else if (m === "mmd") out.mmd = await mmdRbf(ref!, gen.x, { dim });
      else if (m === "straightness") {
        const r = gen.recorded!;
        const s = await straightness(r.trajectory!, r.times);
        out.straightness = s.straightness;
        out.lengthRatio = s.lengthRatio;
      } else if (m === "nfe") out.nfe = gen.nfe;
    }
  } finally {
    disposeRecorded(gen.recorded);
  }
  return out;
}

/**
 * Run the task; prints and returns the record (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { main } from "./eval.ts";
 * console.log(await main(["--help"])); // prints the usage, then null
 * ```
 */
export async function main(
  argv: readonly string[],
): Promise<EvalRecord | FlowMapEvalRecord | null> {
  // A train:flowmap checkpoint gets seed 004's KL table (tasks/eval_flowmap.ts).
  const fm = await flowMapCheckpointIn(argv);
  if (fm) return await evalFlowMap(argv, fm);
  let help = false;
  const f = parseFlags(argv, EVAL_FLAGS, {
    task: "eval",
    usage: "Sample a train:cfm checkpoint and score it against fresh data; prints one JSON object.",
    onHelp: (text) => {
      console.log(text);
      help = true;
    },
  });
  if (help) return null;
  if (f.checkpoint === undefined) {
    throw new RangeError("Expected --checkpoint (a checkpoint file, run directory or URL)");
  }
  const given = f.metrics === undefined ? undefined : parseMetrics(f.metrics);
  const ck = await resolveCheckpoint(f.checkpoint);
  const metrics = given ??
    (ck.config.dataShape.length === 1 ? [...EVAL_METRICS] : ["w2", "mmd", "nfe"] as EvalMetric[]);
  const rec = await evaluate(ck, {
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
  });
  const line = JSON.stringify(rec);
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

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    if (e instanceof RangeError || e instanceof TypeError) {
      console.error(`eval: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
