/**
 * @file The flags and configuration of `train:stablevm` (apart from the task so the task
 * file stays a thin flags → config → trainer → fit → report script).
 * @module
 */
import {
  type LabelledSet,
  type LatentSpec,
  loadFashionMnist,
  PATH_TYPES,
  type PathType,
  type RepaSettings,
  type StableVmTrainerConfig,
} from "../mod.ts";
import { type FlagSpec, parseTaskFlags, REPA_FLAGS, resolveRepaFlags } from "../cli/mod.ts";
import { checkChoice } from "../lib/_util.ts";
import {
  IMAGE_SCHEDULE,
  resolveImageFlags,
  STABLEVM_IMAGE_FLAGS,
  type StableVmImageConfig,
} from "./_stablevm_images.ts";
import { resolveLatentFlag, STABLEVM_LATENT_FLAGS } from "./_stablevm_latent.ts";
import { OPTIMIZER_FLAGS, resolveOptimizerFlags } from "./_optimizer.ts";

export { imageShape } from "./_stablevm_images.ts";

/** Valid `--loss-type` values (SV: "si" = CFM, "stablevm"). */
export const LOSS_TYPES = ["si", "stablevm"] as const;
/** Valid `--model` values here: SV's toy MLP, or a small DiT for image rows (REPA needs it). */
export const MODELS = ["adaln-mlp", "dit-tiny"] as const;

/** The resolved configuration of a run (written to config.json). */
export interface TrainStableVmConfig
  extends Omit<StableVmTrainerConfig, keyof RepaSettings>, RepaSettings, StableVmImageConfig {
  lossType: typeof LOSS_TYPES[number];
  pathType: PathType;
  prediction: "v";
  weighting: "uniform" | "lognormal";
  maxTrainSteps: number;
  maxGradNorm: number;
  outputDir: string;
  expName: string | null;
  dataDir: string | null;
  /** `--latents` as given, replaced by the autoencoder's record when the run is created. */
  latents: LatentSpec | string | null;
  model: typeof MODELS[number];
  checkpointEvery: number;
  logEvery: number;
  resume: string | null;
  sampleSteps: number;
  fisherSamples: number;
}

/** Keys a resumed run takes from the command line when given; the rest come from config.json. */
export const STABLEVM_SCHEDULE = [
  "maxTrainSteps",
  "warmupSteps",
  "checkpointEvery",
  "logEvery",
  "sampleSteps",
  "fisherSamples",
  ...IMAGE_SCHEDULE,
] as const;

/** The flags (kebab-case; the seed's snake_case and dotted spellings are accepted too). */
export const TRAIN_STABLEVM_FLAGS = [
  {
    name: "loss-type",
    type: "choice",
    choices: LOSS_TYPES,
    default: "stablevm",
    help: "CFM (si) or StableVM",
  },
  { name: "bank-capacity-per-class", type: "int", default: 256, min: 1, help: "bank size" },
  {
    name: "prefill-bank-fully",
    type: "bool",
    help: "fill every class ring before training (else >= 1 each)",
  },
  { name: "efficient", type: "bool", help: "chunked bank pass (stable_vm_efficient)" },
  {
    name: "path-type",
    type: "string",
    default: "linear",
    help: "interpolation path: linear | cosine (SV/REPA --path-type)",
  },
  { name: "prediction", type: "string", default: "v", help: "model prediction (only v)" },
  {
    name: "weighting",
    type: "string",
    default: "uniform",
    help: "time distribution: uniform | lognormal (SV --weighting)",
  },
  { name: "max-train-steps", type: "int", default: 1500, min: 1, help: "optimizer steps" },
  { name: "batch-size", type: "int", default: 256, min: 1, help: "batch size" },
  {
    name: "learning-rate",
    type: "number",
    default: 1e-3,
    min: 0,
    aliases: ["lr"],
    help: "Adam/AdamW learning rate (muon: of the AdamW part)",
  },
  ...OPTIMIZER_FLAGS,
  { name: "max-grad-norm", type: "number", default: 1, min: 0, help: "gradient clipping norm" },
  { name: "seed", type: "int", default: 0, min: 0, help: "random seed" },
  { name: "output-dir", type: "string", default: "runs", help: "parent of the run directory" },
  { name: "exp-name", type: "string", help: "run directory name (default train-stablevm-<time>)" },
  {
    name: "data-dir",
    type: "string",
    help: '.npz (or a directory with data.npz) holding x and labels, or "fashion-mnist"',
  },
  {
    name: "model",
    type: "string",
    default: "adaln-mlp",
    help: "adaln-mlp, or dit-tiny for image rows (--hidden wide, --blocks deep)",
  },
  { name: "hidden", type: "int", default: 32, min: 1, help: "MLP width" },
  { name: "blocks", type: "int", default: 4, min: 1, help: "MLP blocks" },
  { name: "dropout", type: "number", default: 0.1, min: 0, max: 1, help: "dropout" },
  ...REPA_FLAGS,
  { name: "ema-decay", type: "number", default: 0.999, min: 0, max: 1, help: "EMA decay" },
  { name: "warmup-steps", type: "int", default: 0, min: 0, help: "linear learning-rate warm-up" },
  { name: "checkpoint-every", type: "int", default: 500, min: 1, help: "checkpoint interval" },
  { name: "log-every", type: "int", default: 50, min: 1, help: "steps between metric lines" },
  { name: "resume", type: "string", help: "a run directory (or a checkpoint in one) to continue" },
  { name: "sample-steps", type: "int", default: 50, min: 1, help: "ODE steps for the sample plot" },
  { name: "fisher-samples", type: "int", default: 4096, min: 1, help: "Fisher samples per t" },
  ...STABLEVM_IMAGE_FLAGS,
  ...STABLEVM_LATENT_FLAGS,
  // Accepted for pasted SV commands; they mean nothing on this engine.
  { name: "report-to", type: "string", help: "ignored (wandb)" },
  { name: "allow-tf32", type: "bool", help: "ignored" },
  { name: "mixed-precision", type: "string", help: "ignored (f32 only)" },
] as const satisfies readonly FlagSpec[];

const ABOUT = "Train a class-conditional velocity model with Stable Velocity Matching or CFM. " +
  "With no flags: the AdaLN-Zero MLP on an embedded 8-class 2-D Gaussian mixture, a few minutes on a CPU adapter.";

/**
 * Parse and validate the flags (everything is checked before any training starts).
 * Returns `null` for `--help` (after printing the usage).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseTrainFlags } from "./_stablevm.ts";
 * const cfg = parseTrainFlags(["--loss_type=si", "--bank-capacity-per-class", "64"]);
 * assert.deepEqual([cfg?.lossType, cfg?.bankCapacityPerClass], ["si", 64]);
 * ```
 */
export function parseTrainFlags(
  argv: readonly string[],
  given?: Set<string>,
): TrainStableVmConfig | null {
  const f = parseTaskFlags(argv, TRAIN_STABLEVM_FLAGS, {
    task: "train:stablevm",
    given,
    usage: ABOUT,
  });
  if (!f) return null;
  if (f.model !== "dit-tiny" && /^(SiT|DiT)-/i.test(f.model)) {
    throw new RangeError(
      `--model ${f.model}: SV's SiT/DiT sizes are not built here; use --model dit-tiny ` +
        `(its width is --hidden, its depth --blocks) on image data`,
    );
  }
  if (f.useProjLoss && f.model !== "dit-tiny") {
    throw new RangeError(
      `--use-proj-loss aligns a DiT's tokens to image-encoder features: add --model dit-tiny ` +
        `and image data (--data-dir fashion-mnist)`,
    );
  }
  return {
    lossType: f.lossType,
    bankCapacityPerClass: f.bankCapacityPerClass,
    prefillBankFully: f.prefillBankFully,
    efficient: f.efficient,
    pathType: checkChoice("--path-type", f.pathType, PATH_TYPES),
    prediction: checkChoice("--prediction", f.prediction, ["v"] as const),
    weighting: checkChoice("--weighting", f.weighting, ["uniform", "lognormal"] as const),
    maxTrainSteps: f.maxTrainSteps,
    batchSize: f.batchSize,
    learningRate: f.learningRate,
    ...resolveOptimizerFlags(f),
    warmupSteps: f.warmupSteps,
    maxGradNorm: f.maxGradNorm,
    seed: f.seed,
    outputDir: f.outputDir,
    expName: f.expName ?? null,
    ...resolveLatentFlag(f),
    model: checkChoice("--model", f.model, MODELS),
    hidden: f.hidden,
    blocks: f.blocks,
    dropout: f.dropout,
    ...resolveRepaFlags(f, f.blocks, given ?? new Set()),
    emaDecay: f.emaDecay,
    checkpointEvery: f.checkpointEvery,
    logEvery: f.logEvery,
    resume: f.resume ?? null,
    sampleSteps: f.sampleSteps,
    fisherSamples: f.fisherSamples,
    ...resolveImageFlags(f, given ?? new Set()),
  };
}

/** Fashion-MNIST's first `limit` training images as labelled rows. */
export async function fashionRows(limit: number): Promise<LabelledSet> {
  const ds = await loadFashionMnist({ limit });
  return {
    x: ds.images,
    labels: Int32Array.from(ds.labels),
    n: ds.n,
    dim: ds.images.length / ds.n,
    numClasses: ds.numClasses,
    gmm: null,
    shape: [...ds.shape],
    classNames: ds.classNames,
  };
}

/** Flags SV's commands carry that mean nothing here: one line each, never silently (issue 11). */
export function warnIgnoredFlags(given: ReadonlySet<string>): void {
  const notes: Record<string, string> = {
    "report-to": "metrics go to metrics.jsonl",
    "allow-tf32": "flowgpu computes in f32",
    "mixed-precision": "flowgpu computes in f32",
  };
  for (const [k, why] of Object.entries(notes)) {
    const camel = k.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
    if (given.has(camel)) console.warn(`train:stablevm: --${k} has no effect here (${why})`);
  }
}
