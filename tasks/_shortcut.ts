/**
 * @file What `train:shortcut`, `train:anchor` and `train:local` share (seed 000): flags with
 * the seed's `--model.*` spellings and SC's defaults, data (2-D toys, Fashion-MNIST) and the
 * step-conditioned model. Data is in `_shortcut_data.ts`, the trainer and the few-step
 * evaluation in `_shortcut_fit.ts`.
 * @module
 */
import {
  type AnchorTerm,
  encodePng,
  fit,
  type FitResult,
  gatherRows,
  Generator,
  loadFashionMnist,
  type LocalityTerm,
  nn,
  openTrainingRun,
  optim,
  type Run,
  sampleToy,
  type ShortcutBatch,
  shortcutLoss,
  shortcutSample,
  shortcutTargets,
  type ShortcutVelocityFn,
  type StepContext,
  type StepMetrics,
  straightness,
  type Tensor,
  tensor,
  w2,
} from "../mod.ts";
import { imageGrid, scatterPanels } from "../viz/mod.ts";
import { type FlagSpec, parseFlags } from "../cli/mod.ts";
import { LABELLED_TOYS } from "./_shortcut_data.ts";

/** Datasets of the shortcut tasks. */
export const SHORTCUT_DATASETS = [
  "8gaussians",
  "moons",
  "checkerboard",
  "spirals",
  "fashion-mnist",
] as const;

/** Flags of all three tasks (SC's train.py names and defaults as aliases). */
export const COMMON_FLAGS = [
  {
    name: "dataset",
    type: "choice",
    choices: SHORTCUT_DATASETS,
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
export interface ShortcutTaskConfig {
  task: string;
  dataset: typeof SHORTCUT_DATASETS[number];
  dataShape: number[];
  /** Classes the model is conditioned on (0: unconditional). */
  numClasses: number;
  /** Classes of the data's labels (for label anchors; 0: unlabelled). */
  labelClasses: number;
  model: "velocity-mlp" | "dit-tiny";
  hidden: number;
  depth: number;
  dtConditioning: true;
  batchSize: number;
  lr: number;
  weightDecay: number;
  maxTrainSteps: number;
  emaDecay: number;
  gradClip: number;
  denoiseTimesteps: number;
  bootstrapEvery: number;
  bootstrapCfg: boolean;
  bootstrapEma: boolean;
  cfgScale: number;
  cfgDropout: number;
  seed: number;
  outputDir: string;
  expName: string | null;
  logEvery: number;
  checkpointEvery: number;
  sampleEvery: number;
  evalSamples: number;
  resume: string | null;
  [k: string]: unknown;
}

/** Parse flags (null for --help) and the set of flags given on the command line. */
export function parseTaskFlags<const S extends readonly FlagSpec[]>(
  argv: readonly string[],
  spec: S,
  task: string,
  usage: string,
): { f: ReturnType<typeof parseFlags<S>>; given: Set<string> } | null {
  let help = false;
  const f = parseFlags(argv, spec, {
    task,
    usage,
    onHelp: (t) => {
      console.log(t);
      help = true;
    },
  });
  if (help) return null;
  const bare: Record<string, unknown> = parseFlags(
    argv,
    spec.map((s) => ({ ...s, default: undefined })),
    { task },
  );
  const given = new Set(
    Object.entries(bare).filter(([k, v]) => k !== "_" && v !== undefined && v !== false)
      .map(([k]) => k),
  );
  return { f, given };
}

/** Resolve the common flags into a config. */
export function commonConfig(
  task: string,
  f: ReturnType<typeof parseFlags<typeof COMMON_FLAGS>>,
): ShortcutTaskConfig {
  const images = f.dataset === "fashion-mnist";
  const model = f.model ?? (images ? "dit-tiny" : "velocity-mlp");
  if (images !== (model === "dit-tiny")) {
    throw new RangeError(`--model ${model} does not fit --dataset ${f.dataset}`);
  }
  return {
    task,
    dataset: f.dataset,
    dataShape: images ? [1, 28, 28] : [2],
    numClasses: images ? 10 : 0,
    labelClasses: images ? 10 : LABELLED_TOYS[f.dataset] ?? 0,
    model,
    hidden: f.hidden ?? (images ? 64 : 128),
    depth: f.depth ?? (images ? 4 : 3),
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

/** A step-conditioned network (initialised from `seed + 1`, as train:cfm). */
export type ShortcutNet = nn.VelocityMLP | nn.DiT;

/** Build the network a config describes. */
export function buildShortcutModel(c: ShortcutTaskConfig): ShortcutNet {
  const classes = c.numClasses;
  if (c.model === "velocity-mlp") {
    return new nn.VelocityMLP({
      dim: c.dataShape[0]!,
      hidden: c.hidden,
      depth: c.depth,
      numClasses: classes || undefined,
      classDropoutProb: c.cfgDropout,
      dtConditioning: true,
      seed: c.seed + 1,
    });
  }
  return new nn.DiT({
    inputSize: c.dataShape[1]!,
    patchSize: 4,
    inChannels: c.dataShape[0]!,
    hiddenSize: c.hidden,
    depth: c.depth,
    numHeads: c.hidden % 4 === 0 ? 4 : 1,
    numClasses: classes,
    classDropoutProb: c.cfgDropout,
    dtConditioning: true,
    seed: c.seed + 1,
  });
}

/** The model as `(x, t, dtBase, y?) => v`. */
export function shortcutFn(m: ShortcutNet): ShortcutVelocityFn {
  return m instanceof nn.DiT
    ? (x, t, d, y) => m.forward(x, t, y, undefined, d)
    : (x, t, d, y) => m.forward(x, t, y, d);
}

/** Run a task's main: user errors (RangeError/TypeError) print one line and exit 2. */
export async function runMain(name: string, main: (a: string[]) => Promise<unknown>) {
  try {
    await main(Deno.args);
  } catch (e) {
    if (e instanceof RangeError || e instanceof TypeError) {
      console.error(`${name}: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
