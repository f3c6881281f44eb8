/**
 * @file Scoring a `train:cfm` checkpoint against fresh data: exact W2, histogram KL, RBF
 * MMD, straightness of the sampled paths and NFE (the `eval` and `cfm:table` tasks).
 * @module
 */
import { Generator } from "../random.ts";
import { loadFashionMnist, sampleToy } from "../data/mod.ts";
import { disposeRecorded, type SamplerMethod } from "../flow/mod.ts";
import { frechetDistance, histogramKL, mmdRbf, straightness, w2 } from "../metrics/mod.ts";
import type * as nn from "../nn/mod.ts";
import { classifierAccuracy, featureStats } from "./classifier.ts";
import {
  type CfmDataset,
  cfmModelFromCheckpoint,
  type LoadedCfmCheckpoint,
  sampleCfmModel,
} from "./cfm_model.ts";
import { samplesAsData } from "./latent.ts";

/**
 * Metric names of {@linkcode evaluateCfm}. `fd` (Fréchet distance on a classifier's
 * penultimate features, not the Inception FID) and `class-acc` (the classifier's agreement
 * with the intended class) are for Fashion-MNIST image models.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { EVAL_METRICS } from "../../mod.ts";
 * assert.equal(EVAL_METRICS.join(","), "w2,kl,mmd,straightness,nfe,fd,class-acc");
 * ```
 */
export const EVAL_METRICS = ["w2", "kl", "mmd", "straightness", "nfe", "fd", "class-acc"] as const;
/** A metric name. */
export type EvalMetric = typeof EVAL_METRICS[number];

/** Options of {@linkcode evaluateCfm}. */
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
  /**
   * The image classifier whose penultimate features give `fd` and whose predictions give
   * `class-acc` (a `train:classifier` model; needed by those two metrics only).
   */
  classifier?: nn.MLPClassifier;
  /** Classifier-free guidance scale for class-conditional models (default 1: none). */
  cfgScale?: number;
  /** Called as each stage starts ("sample", "reference data", then each metric) and with
   * `null` when all are done: stages done so far, and their count (for progress). */
  onStage?: (stage: string | null, done: number, count: number) => void;
}

/** One evaluation record. */
export interface EvalRecord {
  /** The checkpoint scored. */
  checkpoint: string;
  /** Its training step. */
  step: number;
  /** Reference data. */
  dataset: CfmDataset;
  /** Sampler. */
  sampler: SamplerMethod;
  /** Fixed steps (null for dopri5). */
  numSteps: number | null;
  /** Samples. */
  numSamples: number;
  /** Seed. */
  seed: number;
  /** EMA weights used. */
  useEma: boolean;
  /** Exact W2 to fresh data. */
  w2?: number;
  /** Histogram KL(data ‖ model). */
  kl?: number;
  /** RBF MMD. */
  mmd?: number;
  /** Straightness S of the sampled paths. */
  straightness?: number;
  /** Path length / displacement. */
  lengthRatio?: number;
  /** Velocity evaluations per sample. */
  nfe?: number;
  /** Classifier-free guidance scale the samples were drawn with. */
  cfgScale?: number;
  /**
   * Fréchet distance between the classifier's penultimate features of the samples and of as
   * many test images (FD, not the Inception FID).
   */
  fd?: number;
  /** The same FD for as many real training images: the floor a perfect model would reach. */
  fdRealTrainTest?: number;
  /** Fraction of samples the classifier assigns to the class they were drawn for. */
  classAcc?: number;
  /** `classAcc` per class. */
  classAccPerClass?: number[];
  /** The classifier checkpoint read (set by the eval task). */
  classifier?: string;
}

/**
 * Fresh reference data: the toy from `seed + 1000003`, or Fashion-MNIST's test split.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { referenceData } from "../../mod.ts";
 * assert.equal((await referenceData("moons", 5, 0)).length, 10);
 * ```
 */
export async function referenceData(
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
 * Score samples of a loaded checkpoint (see `readCfmCheckpoint`). Histogram KL is
 * KL(data ‖ model) on a `klBins`² grid over the data's range (5% margin), with 1e-4 added
 * to every model bin so empty bins cost log(p/1e-4) rather than infinity.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildCfmModel, evaluateCfm } from "../../mod.ts";
 * const config = { task: "train:cfm", dataset: "moons" as const, model: "velocity-mlp" as const, hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 };
 * const checkpoint = { model: buildCfmModel(config).stateDict(), step: 0 };
 * const r = await evaluateCfm({ path: "mem", runDir: null, config, checkpoint }, {
 *   metrics: ["nfe", "kl"], numSamples: 16, sampler: "midpoint", numSteps: 2, seed: 0,
 * });
 * assert.equal(r.nfe, 4);
 * assert.ok(r.kl! > 0);
 * ```
 */
export async function evaluateCfm(
  ck: LoadedCfmCheckpoint,
  o: EvaluateOptions,
): Promise<EvalRecord> {
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
  const wantFd = o.metrics.includes("fd"), wantAcc = o.metrics.includes("class-acc");
  const C = ck.config.numClasses;
  if ((wantFd || wantAcc) && dataset !== "fashion-mnist") {
    throw new RangeError(
      `--metrics fd and class-acc score images with a Fashion-MNIST classifier, but the ` +
        `checkpoint's data are ${dataset}`,
    );
  }
  if ((wantFd || wantAcc) && !o.classifier) {
    throw new RangeError(
      "--metrics fd and class-acc need a classifier (--classifier; deno task train:classifier)",
    );
  }
  // A latent run is scored on its decoded images; its autoencoder is opened (and checked)
  // before the sampling it would waste.
  const shape = (await samplesAsData(ck.config, new Float32Array(0))).shape;
  const width = shape.reduce((a, b) => a * b, 1);
  if (o.classifier && o.classifier.inputDim !== width) {
    throw new RangeError(
      `The classifier takes ${o.classifier.inputDim} inputs but the model's samples have ` +
        `shape [${shape}]`,
    );
  }
  if (wantAcc && C === 0) {
    throw new RangeError(
      "--metrics class-acc needs a class-conditional checkpoint (trained with --num-classes); " +
        "this one is unconditional: use fd",
    );
  }
  // Balanced intended classes (i mod C) whenever a class metric reads them.
  const labels = C > 0 && (wantFd || wantAcc)
    ? Float32Array.from({ length: o.numSamples }, (_, i) => i % C)
    : undefined;
  const useEma = o.useEma ?? true;
  const model = cfmModelFromCheckpoint(ck, useEma);
  const record = o.metrics.includes("straightness");
  const needRef = o.metrics.some((m) => m === "w2" || m === "kl" || m === "mmd" || m === "fd");
  const count = 1 + (needRef ? 1 : 0) + o.metrics.length;
  let done = 0;
  const stage = (name: string | null) => o.onStage?.(name, done++, count);
  let gen;
  try {
    stage(`sample ${o.numSamples} with ${o.sampler} (compiles the GPU pipelines)`);
    gen = await sampleCfmModel(model, ck.config.dataShape, {
      n: o.numSamples,
      sampler: o.sampler,
      steps: o.numSteps,
      seed: o.seed,
      atol: o.atol,
      rtol: o.rtol,
      record,
      labels,
      cfgScale: o.cfgScale ?? 1,
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
    ...(C > 0 ? { cfgScale: o.cfgScale ?? 1 } : {}),
  };
  try {
    // A latent run's codes become images; straightness stays on the sampled (latent) paths.
    const x = (await samplesAsData(ck.config, gen.x)).x;
    const dim = x.length / o.numSamples;
    if (needRef) stage(`reference data (${dataset})`);
    const ref = needRef ? await referenceData(dataset, o.numSamples, o.seed) : null;
    for (const m of o.metrics) {
      stage(m);
      if (m === "w2") out.w2 = await w2(ref!, x, { dim });
      else if (m === "kl") {
        out.kl = histogramKL(ref!, x, {
          bins: o.klBins ?? 25,
          range: dataRange(ref!),
          eps: 1e-4,
        });
      } else if (m === "mmd") out.mmd = await mmdRbf(ref!, x, { dim });
      else if (m === "straightness") {
        const r = gen.recorded!;
        const s = await straightness(r.trajectory!, r.times);
        out.straightness = s.straightness;
        out.lengthRatio = s.lengthRatio;
      } else if (m === "nfe") out.nfe = gen.nfe;
      else if (m === "fd") {
        const clf = o.classifier!;
        const test = await featureStats(clf, ref!);
        out.fd = frechetDistance(await featureStats(clf, x), test);
        const train = await loadFashionMnist({ split: "train", limit: o.numSamples });
        out.fdRealTrainTest = frechetDistance(await featureStats(clf, train.images), test);
      } else if (m === "class-acc") {
        const r = await classifierAccuracy(o.classifier!, x, labels!);
        out.classAcc = r.accuracy;
        out.classAccPerClass = r.perClass;
      }
    }
    stage(null);
  } finally {
    disposeRecorded(gen.recorded);
  }
  return out;
}
