/**
 * @file Flags and configuration shared by `train:shortcut`, `train:anchor` and `train:local`
 * (seed 000): SC's train.py names and defaults, accepted in the seeds' `--model.*` spellings.
 * The trainer is `shortcutTrainer` (lib/train); `_shortcut_fit.ts` runs it with `fit`.
 * @module
 */
import { CFM_DATASETS, type ShortcutTrainerConfig, TOY_LABEL_CLASSES } from "../mod.ts";
// Imported under another name: this module exports its own parseTaskFlags (task and usage
// positional, `given` returned) that train:shortcut, train:local and train:anchor call.
import {
  type FlagSpec,
  type ParsedFlags,
  parseTaskFlags as parseCliTaskFlags,
} from "../cli/mod.ts";

/**
 * Flags of all three tasks (SC's train.py names and defaults as aliases).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { COMMON_FLAGS } from "./_shortcut.ts";
 * assert.equal(COMMON_FLAGS.find((f) => f.name === "bootstrap-every")?.default, 8);
 * ```
 */
export const COMMON_FLAGS = [
  {
    name: "dataset",
    type: "choice",
    choices: CFM_DATASETS,
    default: "8gaussians",
    aliases: ["dataset-name"],
    help: "data",
  },
  { name: "model", type: "choice", choices: ["velocity-mlp", "dit-tiny"], help: "network" },
  { name: "hidden", type: "int", min: 4, aliases: ["hidden-size"], help: "width (128 / 64)" },
  { name: "depth", type: "int", min: 1, help: "layers or blocks (default 3 MLP, 4 DiT)" },
  { name: "batch-size", type: "int", default: 256, min: 2, help: "batch size" },
  { name: "lr", type: "number", default: 1e-4, min: 0, help: "AdamW learning rate (SC)" },
  { name: "weight-decay", type: "number", default: 0.1, min: 0, help: "AdamW decay (SC)" },
  {
    name: "max-train-steps",
    type: "int",
    default: 2000,
    min: 1,
    aliases: ["max-steps"],
    help: "optimizer steps",
  },
  {
    name: "ema-decay",
    type: "number",
    default: 0.999,
    min: 0,
    max: 1,
    aliases: ["target-update-rate"],
    help: "EMA decay (fixed, SC)",
  },
  { name: "grad-clip", type: "number", default: 0, min: 0, help: "clip grad norm (0: off, SC)" },
  { name: "denoise-timesteps", type: "int", default: 128, min: 2, help: "time grid (2^K)" },
  { name: "bootstrap-every", type: "int", default: 8, min: 0, help: "1/N rows bootstrap" },
  { name: "bootstrap-cfg", type: "bool", default: false, help: "CFG in the bootstrap" },
  { name: "bootstrap-ema", type: "bool", default: true, help: "bootstrap from the EMA" },
  { name: "cfg-scale", type: "number", default: 4, help: "guidance scale" },
  {
    name: "class-dropout-prob",
    type: "number",
    min: 0,
    max: 1,
    help: "label dropout (0.1 with labels)",
  },
  { name: "seed", type: "int", default: 0, min: 0, help: "random seed" },
  {
    name: "output-dir",
    type: "string",
    default: "runs",
    aliases: ["save-dir"],
    help: "parent of the run directory",
  },
  { name: "exp-name", type: "string", help: "run directory name" },
  { name: "log-every", type: "int", default: 100, min: 1, aliases: ["log-interval"] },
  { name: "checkpoint-every", type: "int", default: 1000, min: 1, aliases: ["save-interval"] },
  { name: "sample-every", type: "int", default: 0, min: 0, aliases: ["eval-interval"] },
  { name: "eval-samples", type: "int", default: 1000, min: 2, help: "samples for W2" },
  { name: "resume", type: "string", help: "run directory or checkpoint to continue" },
] as const satisfies readonly FlagSpec[];

/** The resolved configuration (config.json and checkpoints). */
export interface ShortcutTaskConfig extends ShortcutTrainerConfig {
  task: string;
  dtConditioning: true;
  /** Classes of the data's labels (for label anchors; 0: unlabelled). */
  labelClasses: number;
  maxTrainSteps: number;
  gradClip: number;
  outputDir: string;
  expName: string | null;
  logEvery: number;
  checkpointEvery: number;
  sampleEvery: number;
  evalSamples: number;
  resume: string | null;
  [k: string]: unknown;
}

/**
 * Parse flags (null for --help) and the set of flags given on the command line.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { COMMON_FLAGS, parseTaskFlags } from "./_shortcut.ts";
 * const p = parseTaskFlags(["--model.bootstrap_every=4", "--save_dir", "/tmp/r"], COMMON_FLAGS, "t", "");
 * assert.equal(p!.f.bootstrapEvery, 4);
 * assert.equal(p!.f.outputDir, "/tmp/r");
 * assert.deepEqual([...p!.given].sort(), ["bootstrapEvery", "outputDir"]);
 * ```
 */
export function parseTaskFlags<const S extends readonly FlagSpec[]>(
  argv: readonly string[],
  spec: S,
  task: string,
  usage: string,
): { f: ParsedFlags<S>; given: Set<string> } | null {
  const given = new Set<string>();
  const f = parseCliTaskFlags(argv, spec, { task, usage, given });
  return f && { f, given };
}

/**
 * Resolve the common flags into a config (model and sizes chosen by the dataset).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { COMMON_FLAGS, commonConfig, parseTaskFlags } from "./_shortcut.ts";
 * const c = commonConfig("train:shortcut", parseTaskFlags([], COMMON_FLAGS, "t", "")!.f);
 * assert.equal(c.model, "velocity-mlp");
 * assert.equal(c.labelClasses, 8); // the 8 Gaussians
 * assert.equal(c.lr, 1e-4); // SC
 * // Fashion-MNIST: DiT-tiny by default; the MLP on flat 784-D pixels when asked for.
 * const f = (a: string[]) => commonConfig("t", parseTaskFlags(a, COMMON_FLAGS, "t", "")!.f);
 * assert.deepEqual(f(["--dataset=fashion-mnist"]).dataShape, [1, 28, 28]);
 * const m = f(["--dataset=fashion-mnist", "--model=velocity-mlp"]);
 * assert.deepEqual([m.dataShape, m.hidden, m.numClasses, m.inputSkip], [[784], 512, 10, true]);
 * assert.throws(() => f(["--model=dit-tiny"]), /needs images/);
 * ```
 */
export function commonConfig(
  task: string,
  f: ParsedFlags<typeof COMMON_FLAGS>,
): ShortcutTaskConfig {
  const images = f.dataset === "fashion-mnist";
  const model = f.model ?? (images ? "dit-tiny" : "velocity-mlp");
  if (!images && model === "dit-tiny") {
    throw new RangeError(`--model dit-tiny needs images; use it with --dataset fashion-mnist`);
  }
  // Fashion-MNIST with the MLP: flat 784-D rows, label-conditioned (an explicit choice).
  const mlp = model === "velocity-mlp";
  return {
    task,
    dataset: f.dataset,
    dataShape: images ? (mlp ? [784] : [1, 28, 28]) : [2],
    numClasses: images ? 10 : 0,
    labelClasses: images ? 10 : TOY_LABEL_CLASSES[f.dataset] ?? 0,
    model,
    hidden: f.hidden ?? (mlp ? (images ? 512 : 128) : 64),
    depth: f.depth ?? (mlp ? 3 : 4),
    // 784-D pixels through a narrower MLP: v = f + c·x lets it cancel the noise everywhere.
    ...(images && mlp ? { inputSkip: true } : {}),
    dtConditioning: true,
    batchSize: f.batchSize,
    lr: f.lr,
    weightDecay: f.weightDecay,
    maxTrainSteps: f.maxTrainSteps,
    emaDecay: f.emaDecay,
    gradClip: f.gradClip,
    denoiseTimesteps: f.denoiseTimesteps,
    bootstrapEvery: f.bootstrapEvery,
    bootstrapCfg: f.bootstrapCfg,
    bootstrapEma: f.bootstrapEma,
    cfgScale: f.cfgScale,
    cfgDropout: f.classDropoutProb ?? (images ? 0.1 : 0),
    seed: f.seed,
    outputDir: f.outputDir,
    expName: f.expName ?? null,
    logEvery: f.logEvery,
    checkpointEvery: f.checkpointEvery,
    sampleEvery: f.sampleEvery,
    evalSamples: f.evalSamples,
    resume: f.resume ?? null,
  };
}
