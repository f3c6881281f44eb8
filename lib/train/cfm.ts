/**
 * @file The conditional flow-matching trainer (I-CFM or Lipman's path, optionally with a
 * minibatch OT coupling: OT-CFM, seed 003) and its data: the 2-D toys or Fashion-MNIST
 * (class labels, dropped for classifier-free guidance by the model's label embedder with
 * the run's random stream). The OT coupling reads its plan back, so it runs in `prepare`,
 * before the differentiated loss.
 *
 * Convention (seeds 001/003): t = 0 noise, t = 1 data, x_t = (1 − t)·x0 + t·x1, target x1 − x0.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { tensor } from "../ops/mod.ts";
import { Generator } from "../random.ts";
import { Adam, AdamW, EMA, Muon, muonMask, type Optimizer } from "../optim/mod.ts";
import { gatherRows, loadFashionMnist, sampleToy } from "../data/mod.ts";
import { cfmLoss, type CouplingMethod, otCouple, type TimeSchedule } from "../flow/mod.ts";
import type { LossOutput, StepContext, Trainer } from "./fit.ts";
import { type RepaEncoder, type RepaSettings, withRepaTerm } from "./repa.ts";
import type * as nn from "../nn/mod.ts";
import type { LoadedAutoencoder } from "./autoencoder.ts";
import { latentCfmData } from "./latent.ts";
import {
  buildCfmModel,
  type CfmDataset,
  type CfmModelConfig,
  type CfmNet,
  checkCfmModelFits,
} from "./cfm_model.ts";

/** Training data of a CFM run: a batch source on the host. */
export interface CfmData {
  /** Shape of one sample. */
  readonly shape: number[];
  /** Number of classes (0: unlabelled). */
  readonly numClasses: number;
  /** Class names by label, for figures (labelled data only). */
  readonly classNames?: readonly string[];
  /** A batch x1 [B, ...shape] (and labels [B] for labelled data), drawn from `gen`. */
  batch(b: number, gen: Generator): { x1: Tensor; y?: Tensor };
  /** A fixed reference batch for plots (host values and labels). */
  reference(n: number): Promise<{ x: Float32Array; labels?: number[] }>;
}

/** Options of {@linkcode cfmData}. */
export interface CfmDataOptions {
  /**
   * Fashion-MNIST as flat rows [B, 784] (for `--model velocity-mlp`) instead of images
   * [B, 1, 28, 28]; the same pixels and labels either way. Ignored by the 2-D toys.
   */
  flat?: boolean;
  /**
   * Fashion-MNIST as this autoencoder's normalised codes [B, latentDim] (latent flow
   * matching; see `latentCfmData`) instead of pixels.
   */
  autoencoder?: LoadedAutoencoder | null;
}

/**
 * The data of a `train:cfm` dataset: a 2-D toy sampled on the fly, or Fashion-MNIST's
 * training split sampled with replacement (indices from the run's stream), as images or,
 * with `flat`, as 784-D rows.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { cfmData, Generator } from "../../mod.ts";
 * const d = await cfmData("moons", 0);
 * const { x1, y } = d.batch(4, new Generator(0));
 * assert.deepEqual(x1.shape, [4, 2]);
 * assert.equal(y, undefined);
 * assert.equal((await d.reference(3)).x.length, 6);
 * ```
 */
export async function cfmData(
  dataset: CfmDataset,
  seed: number,
  opts: CfmDataOptions = {},
): Promise<CfmData> {
  if (dataset !== "fashion-mnist") {
    return {
      shape: [2],
      numClasses: 0,
      batch: (b, gen) => ({ x1: sampleToy(dataset, b, gen) }),
      reference: async (n) => {
        const t = sampleToy(dataset, n, new Generator(seed + 7919));
        const x = await t.data();
        t.dispose();
        return { x };
      },
    };
  }
  const ds = await loadFashionMnist();
  if (opts.autoencoder) return await latentCfmData(opts.autoencoder, ds);
  const row = ds.shape.reduce((a, b) => a * b, 1);
  const shape = opts.flat ? [row] : [...ds.shape];
  return {
    shape,
    numClasses: 10,
    classNames: ds.classNames,
    batch: (b, gen) => {
      const u = gen.uniformHost(b);
      const idx = Array.from(u, (v) => Math.min(ds.n - 1, Math.floor(v * ds.n)));
      return {
        x1: tensor(gatherRows(ds.images, row, idx), [b, ...shape]),
        y: tensor(Float32Array.from(idx, (i) => ds.labels[i]!)),
      };
    },
    reference: (n) => {
      const idx = Array.from({ length: n }, (_, i) => i);
      return Promise.resolve({
        x: gatherRows(ds.images, row, idx),
        labels: idx.map((i) => ds.labels[i]!),
      });
    },
  };
}

/** Settings of {@linkcode cfmTrainer} (a subset of the `train:cfm` config). */
export interface CfmTrainerConfig extends CfmModelConfig {
  /** Minibatch coupling: "none" (independent pairs) or an `otCouple` method. */
  ot: "none" | CouplingMethod;
  /** Sinkhorn entropic regularisation (of the cost as `otNormalize` leaves it). */
  otReg: number;
  /** Divide the OT cost by its "max" or "mean", or use it raw ("none", seed 003; default). */
  otNormalize?: "none" | "max" | "mean";
  /** Sinkhorn iterations. */
  otIters: number;
  /** Path width σ_min. */
  sigmaMin: number;
  /** Probability path. */
  variant: "icfm" | "lipman";
  /** Training-time distribution. */
  timeSampling: TimeSchedule;
  /** Logit-normal mean. */
  timeMean: number;
  /** Logit-normal std. */
  timeStd: number;
  /** Batch size. */
  batchSize: number;
  /** Learning rate of Adam/AdamW (with Muon: of its AdamW part). */
  lr: number;
  /** EMA decay. */
  emaDecay: number;
  /** The update rule (default "adam"). */
  optimizer?: CfmOptimizer;
  /** Muon's learning rate for the weight matrices (default 0.02; `optimizer` "muon" only). */
  muonLr?: number;
  /** REPA's schedule and coefficient (with `useProjLoss`; see `RepaSettings`). */
  projWeightSchedule?: RepaSettings["projWeightSchedule"];
  /** VA-REPA τ. */
  projTau?: number;
  /** VA-REPA sigmoid k. */
  projK?: number;
  /** Coefficient of the projection loss. */
  projCoeff?: number;
}

/**
 * The optimizers `cfmTrainer` can use: Adam (the default), AdamW (decoupled decay 0.01), or
 * Muon on the weight matrices with AdamW on biases, norms and embedding tables.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CFM_OPTIMIZERS } from "../../mod.ts";
 * assert.equal(CFM_OPTIMIZERS.join("|"), "adam|adamw|muon");
 * ```
 */
export const CFM_OPTIMIZERS = ["adam", "adamw", "muon"] as const;
/** A `CFM_OPTIMIZERS` name. */
export type CfmOptimizer = typeof CFM_OPTIMIZERS[number];

/**
 * The optimizer `name` for `model`'s parameters (in `parameters()` order): Adam or AdamW at
 * `lr`, or Muon at `muonLr` on the matrices `muonMask` picks and AdamW at `lr` (betas
 * 0.9/0.95) on the rest.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildOptimizer, nn, optim } from "../../mod.ts";
 * const net = new nn.VelocityMLP({ dim: 2, hidden: 8, depth: 2, seed: 0 });
 * const opt = buildOptimizer("muon", net, { lr: 1e-3 });
 * assert.ok(opt instanceof optim.Muon && opt.lr === 0.02);
 * assert.throws(() => buildOptimizer("sgd" as "adam", net, { lr: 1e-3 }), RangeError);
 * ```
 */
export function buildOptimizer(
  name: CfmOptimizer,
  model: { namedParameters(): Map<string, Tensor> },
  o: { lr: number; muonLr?: number },
): Optimizer {
  switch (name) {
    case "adam":
      return new Adam({ lr: o.lr });
    case "adamw":
      return new AdamW({ lr: o.lr });
    case "muon":
      return new Muon({
        lr: o.muonLr ?? 0.02,
        muon: muonMask(model.namedParameters()),
        adamw: { lr: o.lr },
      });
    default:
      throw new RangeError(
        `Expected the optimizer to be one of ${CFM_OPTIMIZERS.join(", ")} but found ${name}`,
      );
  }
}

/** One training batch (after coupling). */
export interface CfmBatch {
  /** Data. */
  x1: Tensor;
  /** Labels. */
  y?: Tensor;
  /** The coupled pairs, with OT. */
  coupling?: { x0: Tensor; x1: Tensor; labels?: Tensor; sourceIndex: Int32Array };
}

/** A CFM trainer; `batch` is the current step's batch (valid during the step). */
export interface CfmTrainer extends Trainer<CfmNet> {
  /** The batch `prepare` made for the step being computed (null before the first). */
  readonly batch: CfmBatch | null;
}

/**
 * A trainer for CFM / OT-CFM with Adam (or `optimizer`: AdamW, Muon) and an EMA. `generator` must be the run's stream
 * (pass the same one to `fit`): the label dropout draws from it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { cfmData, cfmTrainer, createRun, fit, Generator } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const cfg = { model: "velocity-mlp" as const, hidden: 16, depth: 2, dataShape: [2], numClasses: 0,
 *   cfgDropout: 0, seed: 0, ot: "exact" as const, otReg: 0.05, otIters: 50, sigmaMin: 0,
 *   variant: "icfm" as const, timeSampling: "uniform" as const, timeMean: 0, timeStd: 1,
 *   batchSize: 16, lr: 1e-3, emaDecay: 0.99 };
 * const gen = new Generator(0);
 * const trainer = cfmTrainer(cfg, await cfmData("moons", 0), gen);
 * const run = await createRun("train:cfm", { outputDir: dir, config: cfg });
 * const r = await fit(trainer, { run, generator: gen, maxSteps: 4, logEvery: 2, progress: false });
 * assert.ok(Number.isFinite(r.lastMetrics!["training/ot_marginal_error"]));
 * trainer.model.dispose(); trainer.optimizer.dispose(); trainer.ema!.dispose();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function cfmTrainer(
  c: CfmTrainerConfig,
  data: CfmData,
  generator: Generator,
  repa?: RepaEncoder,
): CfmTrainer {
  checkCfmModelFits(c, c.batchSize);
  if (c.useProjLoss && !repa) {
    throw new TypeError("cfmTrainer: useProjLoss needs the encoder (loadRepaEncoder)");
  }
  const model = buildCfmModel(c);
  // Label dropout draws from the training stream, so a resumed run repeats it exactly.
  if (model.yEmbedder) model.yEmbedder.dropGenerator = generator;
  model.train(true);
  // With REPA the velocity also keeps the projected tokens of this forward pass.
  let projected: Tensor | null = null;
  const velocity = (x: Tensor, t: Tensor, y?: Tensor) => {
    if (!repa) return model.forward(x, t, y);
    const r = (model as nn.DiTWithProjector).forwardProjected(x, t, y);
    projected = r.projected;
    return r.out;
  };
  let cur: CfmBatch | null = null;
  return {
    model,
    optimizer: buildOptimizer(c.optimizer ?? "adam", model, c),
    ema: new EMA(model, { decay: c.emaDecay }),
    ...(repa ? { lossMetric: "training/loss" } : {}),
    get batch() {
      return cur;
    },
    async prepare(ctx: StepContext<CfmNet>) {
      const gen = ctx.generator;
      const { x1, y } = data.batch(c.batchSize, gen);
      ctx.track(x1);
      ctx.track(y);
      cur = { x1, y };
      if (c.ot === "none") return;
      const x0 = gen.normal(x1.shape);
      // The one readback per step OT needs: Sinkhorn's error once (checkEvery = iters) and
      // the assignment; the Hungarian `exact` coupling reads the cost matrix instead.
      const cp = await otCouple(x0, x1, {
        method: c.ot,
        reg: c.otReg,
        normalize: c.otNormalize ?? "none",
        maxIters: c.otIters,
        checkEvery: c.otIters,
        labels: y,
        generator: gen,
      }).finally(() => x0.dispose());
      ctx.track(cp.x0);
      ctx.track(cp.x1);
      ctx.track(cp.labels);
      cur.coupling = cp;
      return { "training/ot_marginal_error": cp.marginalError };
    },
    loss(ctx: StepContext<CfmNet>): LossOutput {
      const b = cur!;
      const r = cfmLoss(velocity, b.x1, {
        y: b.y,
        coupling: b.coupling,
        generator: ctx.generator,
        sigmaMin: c.sigmaMin,
        variant: c.variant,
        timeSchedule: c.timeSampling,
        timeOptions: { mean: c.timeMean, std: c.timeStd },
      });
      if (!repa) return { loss: r.loss };
      // The clean images the path ends at: the OT-coupled x1 when there is a coupling.
      const x1 = b.coupling?.x1 ?? b.x1;
      return withRepaTerm(r.loss, repa.model, x1, projected!, r.t, c);
    },
  };
}
