/**
 * @file What `train:shortcut`, `train:anchor` and `train:local` share (seed 000): flags with
 * the seed's `--model.*` spellings and SC's defaults, data (2-D toys, Fashion-MNIST), the
 * step-conditioned model, the trainer handed to the one training loop (`fit`), and few-step
 * evaluation (W2 at N = 1, 2, 4, 8 and the straightness of the 128-step flow).
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

/** Datasets of the shortcut tasks. */
export const SHORTCUT_DATASETS = [
  "8gaussians",
  "moons",
  "checkerboard",
  "spirals",
  "fashion-mnist",
] as const;
/** Toys with class labels (for label anchors): the Gaussian or the board cell. */
export const LABELLED_TOYS: Record<string, number> = { "8gaussians": 8, checkerboard: 8 };

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
  numClasses: number;
  classCond: boolean;
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
    numClasses: images ? 10 : LABELLED_TOYS[f.dataset] ?? 0,
    classCond: images,
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
  const classes = c.classCond ? c.numClasses : 0;
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

/** Labels of toy points: the nearest of the 8 Gaussians, or the checkerboard cell. */
export function toyLabels(name: string, x: Float32Array): Float32Array {
  const n = x.length / 2, out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const a = x[2 * i]!, b = x[2 * i + 1]!;
    out[i] = name === "8gaussians"
      ? ((Math.round(Math.atan2(b, a) / (Math.PI / 4)) % 8) + 8) % 8
      : ((Math.floor(a) + 2) * 4 + (Math.floor(b) + 2)) >> 1;
  }
  return out;
}

/** A batch x1 and its class labels (when the data has them and `labels` was asked for). */
export interface DataBatch {
  x1: Tensor;
  labels?: Tensor;
}

/** Batches drawn from the run's generator; toy labels are computed only when asked for. */
export async function dataSource(
  c: ShortcutTaskConfig,
): Promise<(b: number, gen: Generator, labels: boolean) => Promise<DataBatch>> {
  if (c.dataset !== "fashion-mnist") {
    const name = c.dataset;
    return async (b, gen, labels) => {
      const x1 = sampleToy(name, b, gen);
      if (!labels || !(name in LABELLED_TOYS)) return { x1 };
      return { x1, labels: tensor(toyLabels(name, await x1.data())) };
    };
  }
  const ds = await loadFashionMnist();
  const row = ds.shape.reduce((a, b) => a * b, 1);
  return (b, gen) => {
    const idx = Array.from(gen.uniformHost(b), (v) => Math.min(ds.n - 1, Math.floor(v * ds.n)));
    return Promise.resolve({
      x1: tensor(gatherRows(ds.images, row, idx), [b, ...ds.shape]),
      labels: tensor(Float32Array.from(idx, (i) => ds.labels[i]!)),
    });
  };
}

/** What a task adds to the shortcut objective for one batch (anchor or locality term). */
export interface Extras {
  /** Whether the batches need class labels. */
  labels?: boolean;
  /** Once the run's configuration is settled (fresh or resumed), before training. */
  setup?(c: ShortcutTaskConfig): Promise<void>;
  /** Host/device work before the loss: the term's inputs, tracked by `ctx`, and metrics. */
  prepare?(
    ctx: StepContext<ShortcutNet>,
    batch: ShortcutBatch,
    data: DataBatch,
  ): Promise<{ anchor?: AnchorTerm; locality?: LocalityTerm; metrics?: StepMetrics }>;
}

/** Few-step quality of a model: W2 to fresh data at N steps, straightness of the flow. */
export interface FewStepEval {
  w2: Record<number, number>;
  straightness: number;
}

/**
 * W2 (exact, `n` samples against `n` fresh data points) of N-step samples for each N, from
 * the same noise, and the straightness of the 128-step (dtBase = 7, the flow) trajectories.
 */
export async function evalFewStep(
  model: ShortcutNet,
  c: ShortcutTaskConfig,
  opts: { n?: number; seed?: number; steps?: number[] } = {},
): Promise<FewStepEval> {
  const n = opts.n ?? c.evalSamples, seed = opts.seed ?? 12345;
  const f = shortcutFn(model);
  const ref = sampleToy(c.dataset, n, new Generator(seed + 7919));
  const x0 = new Generator(seed).normal([n, ...c.dataShape]);
  const out: FewStepEval = { w2: {}, straightness: NaN };
  try {
    for (const N of opts.steps ?? [1, 2, 4, 8]) {
      const r = await shortcutSample(f, x0, N, { denoiseTimesteps: c.denoiseTimesteps });
      out.w2[N] = await w2(r.x, ref);
      r.x.dispose();
    }
    const T = c.denoiseTimesteps;
    const r = await shortcutSample(f, x0, T, { denoiseTimesteps: T, record: true });
    out.straightness = (await straightness(r.trajectory!, r.times)).straightness;
    r.x.dispose();
    r.trajectory!.forEach((t) => t.dispose());
  } finally {
    ref.dispose();
    x0.dispose();
  }
  return out;
}

/** Figures and (toys) few-step metrics with the EMA weights: samples at N = 1, 2, 4, 8. */
async function sampleFigures(model: ShortcutNet, c: ShortcutTaskConfig, run: Run, step: number) {
  const f = shortcutFn(model), steps = [1, 2, 4, 8];
  const gen = new Generator(c.seed + 99);
  const images = c.dataset === "fashion-mnist";
  const n = images ? 40 : 1000;
  const x0 = gen.normal([n, ...c.dataShape]);
  const y = images ? tensor(Float32Array.from({ length: n }, (_, i) => i % 10)) : undefined;
  const outs: Float32Array[] = [];
  for (const N of steps) {
    const r = await shortcutSample(f, x0, N, {
      y,
      cfgScale: images ? c.cfgScale : undefined,
      nullLabel: c.numClasses,
      denoiseTimesteps: c.denoiseTimesteps,
    });
    outs.push(await r.x.data());
    r.x.dispose();
  }
  x0.dispose();
  y?.dispose();
  const grid = () =>
    imageGrid(concatF32(outs), { n: 4 * n, channels: 1, height: 28, width: 28, nrow: 10 });
  const png = images
    ? await (({ width, height, rgba }) => encodePng(width, height, rgba))(grid())
    : await scatterPanels(steps.map((N, i) => ({ points: outs[i]!, title: `N=${N}` })), {
      title: `${c.task} step ${step}`,
    });
  await run.writeFile(`samples/step-${step}.png`, png);
}

function concatF32(xs: Float32Array[]): Float32Array {
  const out = new Float32Array(xs.reduce((a, x) => a + x.length, 0));
  let o = 0;
  for (const x of xs) (out.set(x, o), o += x.length);
  return out;
}

/** What {@linkcode trainShortcut} returns. */
export interface ShortcutRunResult {
  runDir: string;
  fit: FitResult;
  eval: FewStepEval | null;
}

/**
 * Train with the one loop: AdamW, fixed-decay EMA (SC), shortcut batches built in `prepare`
 * with the EMA network as bootstrap teacher, the loss (plus the task's term) in `loss`.
 */
export async function trainShortcut(
  cfg: ShortcutTaskConfig,
  given: ReadonlySet<string>,
  extras: Extras = {},
): Promise<ShortcutRunResult> {
  const { run, config: c, resume } = await openTrainingRun({
    task: cfg.task,
    config: cfg,
    resume: cfg.resume,
    given,
    schedule: ["maxTrainSteps", "logEvery", "checkpointEvery", "sampleEvery"],
    outputDir: cfg.outputDir,
    expName: cfg.expName,
  });
  const draw = await dataSource(c);
  await extras.setup?.(c);
  const model = buildShortcutModel(c).eval(); // label dropout is applied to the batch instead
  const fm = shortcutFn(model);
  let batch: ShortcutBatch | undefined, terms: Awaited<ReturnType<NonNullable<Extras["prepare"]>>>;
  let evalOut: FewStepEval | null = null;
  const tc = {
    denoiseTimesteps: c.denoiseTimesteps,
    bootstrapEvery: c.bootstrapEvery,
    bootstrapCfg: c.bootstrapCfg,
    cfgScale: c.cfgScale,
    numClasses: c.classCond ? c.numClasses : undefined,
    classDropoutProb: c.classCond ? c.cfgDropout : 0,
  };
  const res = await fit<ShortcutNet>({
    model,
    optimizer: new optim.AdamW({ lr: c.lr, weightDecay: c.weightDecay }),
    ema: new optim.EMA(model, { decay: c.emaDecay, warmup: false }),
    emaModel: () => buildShortcutModel(c).eval(),
    lossMetric: "training/loss",
    async prepare(ctx) {
      const data = await draw(c.batchSize, ctx.generator, extras.labels === true || c.classCond);
      const teacher = c.bootstrapEma ? shortcutFn(ctx.emaModel()) : fm;
      const y = c.classCond ? data.labels : undefined;
      batch = shortcutTargets(teacher, data.x1, { ...tc, y, generator: ctx.generator });
      for (const t of [data.x1, data.labels, batch.xt, batch.t, batch.dtBase, batch.target]) {
        ctx.track(t);
      }
      for (const t of [batch.y, batch.x0, batch.x1]) ctx.track(t);
      terms = extras.prepare ? await extras.prepare(ctx, batch, data) : {};
      for (const t of [terms.anchor?.anchors, terms.anchor?.valid]) ctx.track(t);
      return terms.metrics;
    },
    loss() {
      const r = shortcutLoss(fm, batch!, { anchor: terms.anchor, locality: terms.locality });
      const m: StepMetrics = {
        "training/loss_flow": r.lossFlow,
        "training/loss_bootstrap": r.lossBootstrap,
        "training/v_magnitude_prime": r.vMagnitudePrime,
      };
      if (r.lossAnchor) m["training/loss_anchor"] = r.lossAnchor;
      if (r.anchorValidRatio) m["training/anchor_valid_ratio"] = r.anchorValidRatio;
      if (r.lossLocality) m["training/loss_locality"] = r.lossLocality;
      if (r.localityTargetDiff) m["training/locality_target_diff"] = r.localityTargetDiff;
      return { loss: r.loss, metrics: m };
    },
    async sample(ctx) {
      await sampleFigures(model, c, ctx.run, ctx.step);
      if (c.dataset === "fashion-mnist") return;
      evalOut = await evalFewStep(model, c);
      const rec: Record<string, number> = { "eval/straightness": evalOut.straightness };
      for (const [N, v] of Object.entries(evalOut.w2)) rec[`eval/w2_${N}step`] = v;
      await ctx.log(rec);
    },
  }, {
    run,
    maxSteps: c.maxTrainSteps,
    logEvery: c.logEvery,
    checkpointEvery: c.checkpointEvery,
    sampleEvery: c.sampleEvery,
    gradClip: c.gradClip,
    seed: c.seed,
    resume,
    config: c,
    label: c.task,
  });
  model.dispose();
  return { runDir: run.dir, fit: res, eval: evalOut };
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
