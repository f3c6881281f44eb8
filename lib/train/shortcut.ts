/**
 * @file The shortcut-model trainer (SC's train.py; seed 000's train_anchor.py and
 * train_local.py add an anchor or a locality term) and few-step evaluation. Each step,
 * `prepare` draws a batch, builds the bootstrap targets from the EMA network (SC's default)
 * and, for the anchor term, the anchors; `loss` is `shortcutLoss`. SC's optimiser and EMA:
 * AdamW (weight decay 0.1) and a fixed-decay EMA (no warm-up) that starts at the initial
 * weights. Label dropout (to the null class) is applied to the flow rows of the batch, as SC
 * does, so the model runs in eval mode and bootstrap rows keep their labels.
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import { mean, sliceRows, tensor } from "../ops/mod.ts";
import type { Generator } from "../random.ts";
import * as nn from "../nn/mod.ts";
import { AdamW, EMA } from "../optim/mod.ts";
import {
  type AnchorTerm,
  labelAnchors,
  type LocalityTerm,
  nearestCentroid,
  type ShortcutBatch,
  shortcutLoss,
  shortcutTargets,
  type ShortcutVelocityFn,
} from "../flow/mod.ts";
import { frechetDistance, type GaussianStats, straightness, w2 } from "../metrics/mod.ts";
import type { StepContext, StepMetrics, Trainer } from "./fit.ts";
import {
  buildCfmModel,
  type CfmDataset,
  type CfmModelConfig,
  type CfmNet,
  checkCfmModelFits,
  sampleCfmModel,
} from "./cfm_model.ts";
import type { CfmData } from "./cfm.ts";
import { referenceData } from "./evaluate.ts";
import { classifierAccuracy, featureStats } from "./classifier.ts";

/**
 * Toys with class labels for label anchors, and how many: the Gaussian of a point, or its
 * checkerboard cell.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TOY_LABEL_CLASSES } from "../../mod.ts";
 * assert.equal(TOY_LABEL_CLASSES["8gaussians"], 8);
 * ```
 */
export const TOY_LABEL_CLASSES: Readonly<Record<string, number>> = {
  "8gaussians": 8,
  checkerboard: 8,
};

/**
 * Class labels of toy points [n, 2] (host values): the nearest of the 8 Gaussians (the
 * angular sector), or the checkerboard cell (0 … 7).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { toyLabels } from "../../mod.ts";
 * assert.deepEqual([...toyLabels("8gaussians", new Float32Array([5, 0, 0, 5, -5, 0]))], [0, 2, 4]);
 * ```
 */
export function toyLabels(dataset: string, x: Float32Array): Float32Array {
  if (!(dataset in TOY_LABEL_CLASSES)) {
    throw new RangeError(
      `Expected a labelled toy (${Object.keys(TOY_LABEL_CLASSES).join(", ")}) but found ${dataset}`,
    );
  }
  const n = x.length / 2, out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const a = x[2 * i]!, b = x[2 * i + 1]!;
    out[i] = dataset === "8gaussians"
      ? ((Math.round(Math.atan2(b, a) / (Math.PI / 4)) % 8) + 8) % 8
      : ((Math.floor(a) + 2) * 4 + (Math.floor(b) + 2)) >> 1;
  }
  return out;
}

/**
 * A step-conditioned network as `(x, t, dtBase, y?) => v`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, shortcutVelocityOf, tensor } from "../../mod.ts";
 * const m = new nn.VelocityMLP({ dim: 2, hidden: 8, dtConditioning: true, seed: 0 });
 * const v = shortcutVelocityOf(m)(randn([2, 2], { seed: 1 }), tensor([0, 0.5]), tensor([7, 7]));
 * assert.deepEqual(v.shape, [2, 2]);
 * ```
 */
export function shortcutVelocityOf(m: CfmNet): ShortcutVelocityFn {
  return m instanceof nn.DiT
    ? (x, t, d, y) => m.forward(x, t, y, undefined, d)
    : (x, t, d, y) => m.forward(x, t, y, d);
}

/** Settings of {@linkcode shortcutTrainer} (SC's `model.*` config, camelCase). */
export interface ShortcutTrainerConfig extends CfmModelConfig {
  /** The data set (for toy labels). */
  dataset: CfmDataset;
  /** Batch size. */
  batchSize: number;
  /** AdamW learning rate (SC 1e-4). */
  lr: number;
  /** AdamW decoupled weight decay (SC 0.1). */
  weightDecay: number;
  /** Fixed EMA decay (SC 0.999). */
  emaDecay: number;
  /** Time grid and finest step (SC 128). */
  denoiseTimesteps: number;
  /** One row in this many is a bootstrap row (SC 8; 0: none). */
  bootstrapEvery: number;
  /** Guidance in the bootstrap (SC 0). */
  bootstrapCfg: boolean;
  /** Bootstrap from the EMA network (SC 1) or the online one. */
  bootstrapEma: boolean;
  /** Guidance scale of the bootstrap (SC 4). */
  cfgScale: number;
}

/** The locality-aware term of the trainer. */
export interface ShortcutTerms {
  /**
   * Anchor term: class means of the batch (`labelClasses`: number of label classes), or the
   * nearest of `centroids` [K, ...] (borrowed: the caller disposes them).
   */
  anchor?: { weight: number; labelClasses?: number; centroids?: Tensor };
  /** Locality term. */
  locality?: { noiseScale: number; weight: number };
}

/** A shortcut trainer; `batch` is the current step's batch (valid during the step). */
export interface ShortcutTrainer extends Trainer<CfmNet> {
  /** The batch `prepare` built for the step being computed (null before the first). */
  readonly batch: ShortcutBatch | null;
}

/**
 * A trainer for shortcut models with an optional anchor or locality term; hand it to `fit`
 * with the run's generator. Logs `training/loss` (the total), `training/loss_flow`,
 * `training/loss_bootstrap`, `training/v_magnitude_prime`, and the terms' metrics
 * (`training/loss_anchor`, `training/anchor_valid_ratio`, `training/cluster_distances`,
 * `training/unique_clusters_used`; `training/loss_locality`, `training/locality_target_diff`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { cfmData, createRun, fit, Generator, shortcutTrainer } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const cfg = { model: "velocity-mlp" as const, hidden: 16, depth: 2, dataShape: [2], numClasses: 0,
 *   cfgDropout: 0, seed: 0, dataset: "8gaussians" as const, batchSize: 32, lr: 1e-3,
 *   weightDecay: 0.1, emaDecay: 0.9, denoiseTimesteps: 128, bootstrapEvery: 8,
 *   bootstrapCfg: false, bootstrapEma: true, cfgScale: 4 };
 * const trainer = shortcutTrainer(cfg, await cfmData("8gaussians", 0), {
 *   anchor: { weight: 1, labelClasses: 8 },
 * });
 * const run = await createRun("train:anchor", { outputDir: dir, config: cfg });
 * const r = await fit(trainer, { run, generator: new Generator(0), maxSteps: 4, logEvery: 2, progress: false });
 * assert.ok(Number.isFinite(r.lastMetrics!["training/loss_anchor"]));
 * trainer.model.dispose(); trainer.optimizer.dispose(); trainer.ema!.dispose();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function shortcutTrainer(
  c: ShortcutTrainerConfig,
  data: CfmData,
  terms: ShortcutTerms = {},
): ShortcutTrainer {
  checkCfmModelFits(c, c.batchSize);
  const build = () => buildCfmModel({ ...c, dtConditioning: true }).eval();
  const model = build();
  const fm = shortcutVelocityOf(model);
  const { anchor, locality } = terms;
  const labelAnchorsOn = anchor !== undefined && anchor.centroids === undefined;
  if (labelAnchorsOn && !(anchor.labelClasses! > 0)) {
    throw new RangeError("Label anchors need labelClasses > 0 (or centroids)");
  }
  const opts = {
    denoiseTimesteps: c.denoiseTimesteps,
    bootstrapEvery: c.bootstrapEvery,
    bootstrapCfg: c.bootstrapCfg,
    cfgScale: c.cfgScale,
    numClasses: c.numClasses || undefined,
    classDropoutProb: c.numClasses ? c.cfgDropout : 0,
  };
  let cur: ShortcutBatch | null = null;
  let extra: { anchor?: AnchorTerm; locality?: LocalityTerm } = {};
  return {
    model,
    optimizer: new AdamW({ lr: c.lr, weightDecay: c.weightDecay }),
    ema: new EMA(model, { decay: c.emaDecay, warmup: false }),
    emaModel: build,
    lossMetric: "training/loss",
    get batch() {
      return cur;
    },
    async prepare(ctx: StepContext<CfmNet>) {
      const gen: Generator = ctx.generator;
      const { x1, y } = data.batch(c.batchSize, gen);
      ctx.track(x1);
      ctx.track(y);
      let labels = y;
      if (labelAnchorsOn && !labels) {
        labels = ctx.track(tensor(toyLabels(c.dataset, await x1.data())));
      }
      const teacher = c.bootstrapEma ? shortcutVelocityOf(ctx.emaModel()) : fm;
      const b = shortcutTargets(teacher, x1, {
        ...opts,
        y: c.numClasses ? y : undefined,
        generator: gen,
      });
      for (const t of [b.xt, b.t, b.dtBase, b.target, b.y, b.x0, b.x1]) ctx.track(t);
      cur = b;
      extra = {};
      const metrics: StepMetrics = {};
      if (locality) extra.locality = { ...locality, generator: gen };
      if (anchor) {
        const B = x1.shape[0]!, Bb = b.numBootstrap;
        const r = tidy(() => {
          if (anchor.centroids) {
            const n = nearestCentroid(sliceRows(x1, Bb, B), anchor.centroids);
            return { anchors: n.anchors, valid: n.valid, dist: mean(n.distance), used: n.used };
          }
          const a = labelAnchors(x1, labels!, anchor.labelClasses!);
          return { anchors: sliceRows(a.anchors, Bb, B), valid: sliceRows(a.valid, Bb, B) };
        });
        extra.anchor = {
          anchors: ctx.track(r.anchors),
          valid: ctx.track(r.valid),
          weight: anchor.weight,
        };
        if (r.dist) metrics["training/cluster_distances"] = r.dist;
        if (r.used) metrics["training/unique_clusters_used"] = r.used;
      }
      return metrics;
    },
    loss() {
      const r = shortcutLoss(fm, cur!, extra);
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
  };
}

/** Few-step quality: W2 at each N, and the straightness of the finest-step (flow) paths. */
export interface FewStepEval {
  /** Exact W2 between N-step samples and fresh data, by N. */
  w2: Record<number, number>;
  /** Straightness S of the `denoiseTimesteps`-step trajectories (dtBase = log2 of it). */
  straightness: number;
}

/**
 * Score a shortcut model on a 2-D toy: exact W2 between `n` samples drawn in N Euler steps of
 * d = 1/N (from the same noise for every N) and `n` fresh data points (`referenceData`), for
 * each N in `steps`; and the straightness of the `denoiseTimesteps`-step trajectories, i.e.
 * of the flow the model learned.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildCfmModel, evaluateFewStep } from "../../mod.ts";
 * const m = buildCfmModel({ model: "velocity-mlp", hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0, dtConditioning: true });
 * const r = await evaluateFewStep(m, { dataset: "moons", dataShape: [2] }, { n: 16, steps: [1, 2] });
 * assert.ok(r.w2[1]! > 0 && r.straightness >= 0);
 * ```
 */
export async function evaluateFewStep(
  model: CfmNet,
  c: { dataset: CfmDataset; dataShape: number[]; denoiseTimesteps?: number },
  o: { n?: number; seed?: number; steps?: readonly number[] } = {},
): Promise<FewStepEval> {
  const n = o.n ?? 1000, seed = o.seed ?? 12345, T = c.denoiseTimesteps ?? 128;
  const ref = await referenceData(c.dataset, n, seed);
  const dim = ref.length / n;
  const run = (steps: number, record = false) =>
    sampleCfmModel(model, c.dataShape, {
      n,
      sampler: "euler",
      steps,
      seed,
      record,
      denoiseTimesteps: T,
    });
  const out: FewStepEval = { w2: {}, straightness: NaN };
  for (const N of o.steps ?? [1, 2, 4, 8]) out.w2[N] = await w2(ref, (await run(N)).x, { dim });
  const g = await run(T, true);
  try {
    out.straightness =
      (await straightness(g.recorded!.trajectory!, g.recorded!.times)).straightness;
  } finally {
    g.recorded!.x.dispose();
    g.recorded!.trajectory!.forEach((t) => t.dispose());
  }
  return out;
}

/** Few-step quality on images: FD and class agreement at each N, and straightness. */
export interface ImageFewStepEval {
  /** FD (classifier features; not the Inception FID) of N-step samples to the reference, by N. */
  fd: Record<number, number>;
  /** Fraction of N-step samples the classifier assigns to their conditioning label, by N. */
  classAcc: Record<number, number>;
  /** Straightness S of the `denoiseTimesteps`-step trajectories (summed over pixels). */
  straightness: number;
}

/** Options of {@linkcode evaluateFewStepImages}. */
export interface ImageFewStepOptions {
  /** Samples per N for FD and class agreement (default 2000). */
  n?: number;
  /** Seed of the noise (the same noise for every N; default 12345). */
  seed?: number;
  /** Step counts N (default 1, 2, 4, 8). */
  steps?: readonly number[];
  /** Samples whose finest-step trajectories give the straightness (default 200). */
  straightnessSamples?: number;
  /** Guidance scale of the samples (default 1: the conditional velocity, no guidance). */
  cfgScale?: number;
  /** Rows per sampling batch (default 1000). */
  batch?: number;
}

/**
 * Score a class-conditional shortcut model on images with a classifier trained by this
 * toolkit: for each N in `steps`, `n` samples in N Euler steps of d = 1/N with labels
 * 0, 1, …, C − 1, 0, 1, … (balanced), then the Fréchet distance between the Gaussian fit of
 * their classifier features and `reference` (e.g. `featureStats` of the test split), and the
 * fraction the classifier assigns to their label. Straightness is that of the
 * `denoiseTimesteps`-step trajectories of `straightnessSamples` samples. The FD lives in
 * the classifier's feature space: it is not the Inception FID and not comparable to
 * published FIDs (compare rows scored with the same classifier and `n` only).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildCfmModel, evaluateFewStepImages, featureStats, nn, randn } from "../../mod.ts";
 * const cfg = { model: "velocity-mlp" as const, hidden: 16, depth: 1, dataShape: [16],
 *   numClasses: 2, cfgDropout: 0, seed: 0, dtConditioning: true, denoiseTimesteps: 8 };
 * const m = buildCfmModel(cfg).eval();
 * const clf = new nn.MLPClassifier({ inputDim: 16, hidden: [8], numClasses: 2, seed: 0 });
 * const ref = await featureStats(clf, await randn([64, 16], { seed: 9 }).data());
 * const r = await evaluateFewStepImages(m, cfg, clf, ref, { n: 32, steps: [1, 2], straightnessSamples: 8 });
 * assert.ok(r.fd[1]! >= 0 && r.fd[2]! >= 0);
 * assert.ok(r.classAcc[1]! >= 0 && r.classAcc[1]! <= 1);
 * assert.ok(r.straightness >= 0);
 * ```
 */
export async function evaluateFewStepImages(
  model: CfmNet,
  c: { dataShape: number[]; numClasses: number; denoiseTimesteps?: number },
  classifier: nn.MLPClassifier,
  reference: GaussianStats,
  o: ImageFewStepOptions = {},
): Promise<ImageFewStepEval> {
  const n = o.n ?? 2000, seed = o.seed ?? 12345, T = c.denoiseTimesteps ?? 128;
  const C = c.numClasses;
  const labelsOf = (m: number) =>
    C > 0 ? Float32Array.from({ length: m }, (_, i) => i % C) : undefined;
  const run = (m: number, steps: number, record = false) =>
    sampleCfmModel(model, c.dataShape, {
      n: m,
      sampler: "euler",
      steps,
      seed,
      labels: labelsOf(m),
      cfgScale: o.cfgScale ?? 1,
      record,
      batch: record ? undefined : o.batch ?? 1000,
      denoiseTimesteps: T,
    });
  const out: ImageFewStepEval = { fd: {}, classAcc: {}, straightness: NaN };
  const labels = labelsOf(n);
  for (const N of o.steps ?? [1, 2, 4, 8]) {
    const x = (await run(n, N)).x;
    out.fd[N] = frechetDistance(await featureStats(classifier, x), reference);
    out.classAcc[N] = labels ? (await classifierAccuracy(classifier, x, labels)).accuracy : NaN;
  }
  const g = await run(o.straightnessSamples ?? 200, T, true);
  try {
    out.straightness =
      (await straightness(g.recorded!.trajectory!, g.recorded!.times)).straightness;
  } finally {
    g.recorded!.x.dispose();
    g.recorded!.trajectory!.forEach((t) => t.dispose());
  }
  return out;
}
