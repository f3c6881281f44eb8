/**
 * @file The flags and configuration of `train:cfm` (kept apart from the task so the task
 * file stays a thin flags → config → trainer → fit → report script).
 * @module
 */
import {
  CFM_DATASETS,
  CFM_MODELS,
  type CfmDataset,
  type CfmModel,
  type CfmTrainerConfig,
  type LatentSpec,
  type RepaSettings,
  TIME_SCHEDULES,
} from "../mod.ts";
import { type FlagSpec, parseTaskFlags, REPA_FLAGS, resolveRepaFlags } from "../cli/mod.ts";
import { OPTIMIZER_FLAGS, resolveOptimizerFlags } from "./_optimizer.ts";

/**
 * Valid `--ot` values (bare `--ot` means `argmax`, seed 003's hard assignment).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { OT_METHODS } from "./_cfm.ts";
 * assert.equal(OT_METHODS.join("|"), "none|argmax|sample|exact");
 * ```
 */
export const OT_METHODS = ["none", "argmax", "sample", "exact"] as const;

/** The resolved configuration of a run (written to config.json and every checkpoint). */
export interface TrainCfmConfig extends Omit<CfmTrainerConfig, keyof RepaSettings>, RepaSettings {
  task: "train:cfm";
  dataset: CfmDataset;
  ot: typeof OT_METHODS[number];
  model: CfmModel;
  maxTrainSteps: number;
  warmupSteps: number;
  gradClip: number;
  outputDir: string;
  expName: string | null;
  checkpointEvery: number;
  sampleEvery: number;
  sampleSteps: number;
  logEvery: number;
  resume: string | null;
  /** `--latents` as given, replaced by the autoencoder's record by `withLatents`. */
  latents: LatentSpec | string | null;
}

/** Keys a resumed run takes from the command line when given; the rest come from config.json. */
export const CFM_SCHEDULE = [
  "maxTrainSteps",
  "warmupSteps",
  "checkpointEvery",
  "sampleEvery",
  "logEvery",
] as const;

/**
 * The flags (kebab-case; snake_case spellings such as `--ot_reg` work too).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TRAIN_CFM_FLAGS } from "./_cfm.ts";
 * assert.ok(TRAIN_CFM_FLAGS.map((f) => f.name).includes("ot-reg"));
 * ```
 */
export const TRAIN_CFM_FLAGS = [
  { name: "dataset", type: "choice", choices: CFM_DATASETS, default: "8gaussians", help: "data" },
  {
    name: "ot",
    type: "choice",
    choices: OT_METHODS,
    default: "none",
    help: "minibatch OT coupling; bare --ot = argmax (seed 003)",
  },
  {
    name: "ot-reg",
    type: "number",
    default: 0.05,
    min: 0,
    help: "Sinkhorn entropic regularisation (of the cost as --ot-normalize leaves it)",
  },
  {
    name: "ot-normalize",
    type: "choice",
    choices: ["none", "max", "mean"],
    default: "none",
    help: "divide the OT cost by its max/mean (none: seed 003's raw cost)",
  },
  {
    name: "ot-iters",
    type: "int",
    default: 50,
    min: 1,
    aliases: ["ot-iterations"],
    help: "Sinkhorn iterations",
  },
  {
    name: "sigma-min",
    type: "number",
    min: 0,
    help: "path width (default 0 for icfm, 1e-5 for lipman)",
  },
  { name: "variant", type: "choice", choices: ["icfm", "lipman"], default: "icfm", help: "path" },
  {
    name: "time-sampling",
    type: "choice",
    choices: TIME_SCHEDULES,
    default: "uniform",
    help: "training-time distribution",
  },
  { name: "time-mean", type: "number", default: 0, help: "logit-normal mean" },
  { name: "time-std", type: "number", default: 1, min: 0, help: "logit-normal std" },
  {
    name: "model",
    type: "choice",
    choices: CFM_MODELS,
    help: "network (default velocity-mlp for 2-D, dit-tiny for images)",
  },
  { name: "hidden", type: "int", min: 4, help: "width (default 128 MLP, 64 DiT)" },
  { name: "depth", type: "int", min: 1, help: "layers/blocks (default 3 MLP, 4 DiT)" },
  {
    name: "cfg-dropout",
    type: "number",
    min: 0,
    max: 1,
    help: "label dropout for CFG (default 0.1 on labelled data)",
  },
  { name: "batch-size", type: "int", default: 256, min: 1, help: "batch size" },
  {
    name: "lr",
    type: "number",
    default: 1e-3,
    min: 0,
    aliases: ["learning-rate"],
    help: "Adam/AdamW learning rate (muon: of the AdamW part)",
  },
  ...OPTIMIZER_FLAGS,
  { name: "max-train-steps", type: "int", default: 2000, min: 1, help: "optimizer steps" },
  { name: "warmup-steps", type: "int", default: 0, min: 0, help: "linear learning-rate warm-up" },
  { name: "ema-decay", type: "number", default: 0.999, min: 0, max: 1, help: "EMA decay" },
  {
    name: "grad-clip",
    type: "number",
    default: 1,
    min: 0,
    aliases: ["max-grad-norm"],
    help: "clip the global grad norm (0: off)",
  },
  { name: "seed", type: "int", default: 0, min: 0, help: "random seed" },
  { name: "output-dir", type: "string", default: "runs", help: "parent of the run directory" },
  { name: "exp-name", type: "string", help: "run directory name (default train-cfm-<time>)" },
  { name: "checkpoint-every", type: "int", default: 1000, min: 1, help: "checkpoint period" },
  { name: "sample-every", type: "int", default: 0, min: 0, help: "sample period (0: at the end)" },
  { name: "sample-steps", type: "int", default: 50, min: 1, help: "midpoint steps for samples" },
  { name: "log-every", type: "int", default: 100, min: 1, help: "steps between metric lines" },
  { name: "resume", type: "string", help: "a run directory or checkpoint to continue" },
  { name: "latents", type: "string", help: "train on this train:autoencoder run's codes" },
  ...REPA_FLAGS,
] as const satisfies readonly FlagSpec[];

const ABOUT = "Train a flow-matching velocity model (CFM / OT-CFM) on a 2-D toy or " +
  "Fashion-MNIST. Time convention: t = 0 noise, t = 1 data.";

/** Bare `--ot` (no value, or followed by another flag) means `--ot argmax`. */
function expandBareOt(argv: readonly string[]): string[] {
  const bare = (next?: string) => next === undefined || next.startsWith("--");
  return argv.map((tok, i) => (tok === "--ot" && bare(argv[i + 1]) ? "--ot=argmax" : tok));
}

/**
 * Parse and validate the flags (before anything is written). Returns `null` for `--help`.
 * `given` receives the names of the flags present on the command line.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseTrainCfmFlags } from "./_cfm.ts";
 * const given = new Set<string>();
 * const c = parseTrainCfmFlags(["--dataset", "moons", "--ot"], given)!;
 * assert.deepEqual([c.ot, c.model, c.hidden], ["argmax", "velocity-mlp", 128]);
 * assert.deepEqual([...given].sort(), ["dataset", "ot"]);
 * ```
 */
export function parseTrainCfmFlags(
  argv: readonly string[],
  given?: Set<string>,
): TrainCfmConfig | null {
  given ??= new Set<string>();
  const f = parseTaskFlags(expandBareOt(argv), TRAIN_CFM_FLAGS, {
    task: "train:cfm",
    given,
    usage: ABOUT,
  });
  if (!f) return null;
  // Latent codes are Fashion-MNIST's (withLatents checks the rest): an MLP on flat vectors.
  if (f.latents !== undefined && !given.has("dataset")) f.dataset = "fashion-mnist";
  const images = f.dataset === "fashion-mnist";
  const model: CfmModel = f.model ?? (images && !f.latents ? "dit-tiny" : "velocity-mlp");
  if (!images && model === "dit-tiny") {
    throw new RangeError(`--model dit-tiny needs images; use it with --dataset fashion-mnist`);
  }
  resolveOptimizerFlags(f);
  if (f.ot !== "none" && f.otReg <= 0) {
    throw new RangeError(`Expected --ot-reg to be a number > 0 but found ${f.otReg}`);
  }
  if (f.variant === "lipman" && f.sigmaMin !== undefined && f.sigmaMin > 1) {
    throw new RangeError(
      `Expected --sigma-min in [0, 1] for --variant lipman but found ${f.sigmaMin}`,
    );
  }
  const dit = model === "dit-tiny";
  const hidden = f.hidden ?? (dit ? 64 : 128);
  if (dit && hidden % 4 !== 0) {
    throw new RangeError(
      `Expected --hidden to be a multiple of 4 for dit-tiny but found ${hidden}`,
    );
  }
  const { _: _pos, sigmaMin, depth, cfgDropout, expName, resume, latents, ...rest } = f;
  const d = depth ?? (dit ? 4 : 3);
  if (f.useProjLoss && !dit) {
    throw new RangeError(`--use-proj-loss aligns a DiT's tokens: use --model dit-tiny (images)`);
  }
  return {
    task: "train:cfm",
    ...rest,
    ...resolveRepaFlags(f, d, given),
    // An MLP sees an image as its 784 pixels, plus a gated input skip (v = f + c·x).
    dataShape: images ? (dit ? [1, 28, 28] : [784]) : [2],
    ...(images && !dit ? { inputSkip: true } : {}),
    numClasses: images ? 10 : 0,
    sigmaMin: sigmaMin ?? (f.variant === "lipman" ? 1e-5 : 0),
    model,
    hidden,
    depth: d,
    cfgDropout: cfgDropout ?? (images ? 0.1 : 0),
    expName: expName ?? null,
    resume: resume ?? null,
    latents: latents ?? null,
  };
}
