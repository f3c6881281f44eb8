/**
 * @file The trainer the shortcut tasks hand to the one training loop (`fit`), and few-step
 * evaluation (W2 at N = 1, 2, 4, 8 and the straightness of the 128-step flow).
 * @module
 */
import {
  type AnchorTerm,
  encodePng,
  fit,
  type FitResult,
  Generator,
  type LocalityTerm,
  openTrainingRun,
  optim,
  type Run,
  sampleToy,
  type ShortcutBatch,
  shortcutLoss,
  shortcutSample,
  shortcutTargets,
  type StepContext,
  type StepMetrics,
  straightness,
  tensor,
  w2,
} from "../mod.ts";
import { imageGrid, scatterPanels } from "../viz/mod.ts";
import { type DataBatch, dataSource } from "./_shortcut_data.ts";
import {
  buildShortcutModel,
  shortcutFn,
  type ShortcutNet,
  type ShortcutTaskConfig,
} from "./_shortcut.ts";

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
    numClasses: c.numClasses || undefined,
    classDropoutProb: c.numClasses ? c.cfgDropout : 0,
  };
  const res = await fit<ShortcutNet>({
    model,
    optimizer: new optim.AdamW({ lr: c.lr, weightDecay: c.weightDecay }),
    ema: new optim.EMA(model, { decay: c.emaDecay, warmup: false }),
    emaModel: () => buildShortcutModel(c).eval(),
    lossMetric: "training/loss",
    async prepare(ctx) {
      const data = await draw(
        c.batchSize,
        ctx.generator,
        extras.labels === true || c.numClasses > 0,
      );
      const teacher = c.bootstrapEma ? shortcutFn(ctx.emaModel()) : fm;
      const y = c.numClasses ? data.labels : undefined;
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
