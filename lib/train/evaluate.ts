/**
 * @file Scoring a `train:cfm` checkpoint against fresh data: exact W2, histogram KL, RBF
 * MMD, straightness of the sampled paths and NFE (the `eval` and `cfm:table` tasks); and
 * the image scores every image trainer shares (`scoreImages`: FD on a classifier's features
 * and class agreement; `evaluateImageField`: sample a class-conditional velocity with CFG
 * and score it against Fashion-MNIST, as `train:stablevm` does after training).
 * @module
 */
import { Generator } from "../random.ts";
import { loadFashionMnist, sampleToy } from "../data/mod.ts";
import {
  disposeRecorded,
  generateSamples,
  type SamplerMethod,
  type VelocityFn,
} from "../flow/mod.ts";
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
        const train = await loadFashionMnist({ split: "train", limit: o.numSamples });
        const s = await scoreImages(o.classifier!, x, { reference: ref!, real: train.images });
        out.fd = s.fd;
        out.fdRealTrainTest = s.fdRealTrainTest;
      } else if (m === "class-acc") {
        const s = await scoreImages(o.classifier!, x, { labels: labels! });
        out.classAcc = s.classAcc;
        out.classAccPerClass = s.classAccPerClass;
      }
    }
    stage(null);
  } finally {
    disposeRecorded(gen.recorded);
  }
  return out;
}

/** What {@linkcode scoreImages} measured: each field is there when its input was given. */
export interface ImageScores {
  /**
   * Fréchet distance between Gaussian fits of the classifier's penultimate features of the
   * samples and of `reference` (FD, not the Inception FID).
   */
  fd?: number;
  /** The same FD for `real` against `reference`: the floor a perfect model would reach. */
  fdRealTrainTest?: number;
  /** Fraction of samples the classifier assigns to the class they were drawn for. */
  classAcc?: number;
  /** `classAcc` per class (NaN for a class with no samples). */
  classAccPerClass?: number[];
}

/** The real images and intended labels {@linkcode scoreImages} compares samples with. */
export interface ImageScoreOptions {
  /** Real images whose features are the FD reference (e.g. the test split): gives `fd`. */
  reference?: Float32Array;
  /**
   * Other real images (e.g. as many training images as samples), scored against `reference`
   * the same way: gives `fdRealTrainTest`. Needs `reference`.
   */
  real?: Float32Array;
  /** The class each sample was drawn for: gives `classAcc` and `classAccPerClass`. */
  labels?: ArrayLike<number>;
}

/**
 * Score image samples `x` (rows of `classifier.inputDim` values in [−1, 1]) with a
 * `train:classifier` model: FD of their penultimate features against `reference`, the floor
 * (`real` against `reference`), and the class agreement with `labels`. The FD lives in the
 * classifier's feature space: compare only numbers from the same classifier and sample
 * counts. `evaluateCfm` (the `eval` task) and `train:stablevm` score with this.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { classifierPredict, nn, randn, scoreImages } from "../../mod.ts";
 * const clf = new nn.MLPClassifier({ inputDim: 6, hidden: [8, 4], numClasses: 3, seed: 0 });
 * const x = await randn([200, 6], { seed: 1 }).data();
 * const y = await randn([200, 6], { seed: 2 }).data();
 * const s = await scoreImages(clf, x, {
 *   reference: x, real: y, labels: await classifierPredict(clf, x),
 * });
 * assert.ok(Math.abs(s.fd!) < 1e-6); // the same images: no distance
 * assert.ok(s.fdRealTrainTest! > s.fd!); // other draws of the same law: a small positive floor
 * assert.equal(s.classAcc, 1); // the classifier agrees with its own predictions
 * assert.equal(s.classAccPerClass!.length, 3);
 * ```
 */
export async function scoreImages(
  classifier: nn.MLPClassifier,
  x: Float32Array,
  o: ImageScoreOptions,
): Promise<ImageScores> {
  const w = classifier.inputDim;
  for (const [name, a] of [["samples", x], ["reference", o.reference], ["real", o.real]] as const) {
    if (a && (a.length === 0 || a.length % w !== 0)) {
      throw new RangeError(
        `Expected ${name} to be rows of the classifier's ${w} inputs but found ${a.length} values`,
      );
    }
  }
  if (o.real && !o.reference) {
    throw new TypeError("scoreImages: real images are scored against a reference; pass both");
  }
  const out: ImageScores = {};
  if (o.reference) {
    const ref = await featureStats(classifier, o.reference);
    out.fd = frechetDistance(await featureStats(classifier, x), ref);
    if (o.real) out.fdRealTrainTest = frechetDistance(await featureStats(classifier, o.real), ref);
  }
  if (o.labels) {
    const r = await classifierAccuracy(classifier, x, o.labels);
    out.classAcc = r.accuracy;
    out.classAccPerClass = r.perClass;
  }
  return out;
}

/** Options of {@linkcode evaluateImageField}. */
export interface ImageFieldOptions {
  /** Extents of one sample (e.g. [1, 28, 28]); the velocity sees rows of their product. */
  dataShape: readonly number[];
  /** Classes C; the model's null (unconditional) label is C. */
  numClasses: number;
  /** The `train:classifier` model whose features and predictions score the samples. */
  classifier: nn.MLPClassifier;
  /** Samples (labels 0, 1, …, C − 1, 0, … : balanced); as many reference images. */
  n: number;
  /** Steps of the sampler. */
  steps: number;
  /** Classifier-free guidance scale (1: the conditional velocity, no guidance). */
  cfgScale: number;
  /** Seed of the noise. */
  seed: number;
  /** Sampler (default "midpoint"). */
  sampler?: SamplerMethod;
  /** Rows per integration batch (default 64; guidance doubles it). */
  batch?: number;
  /**
   * Real images: `test` is the FD reference, `real` the floor's images (each ≥ n rows; the
   * first n are used). Default: the first n images of Fashion-MNIST's test and train splits.
   */
  images?: { test: Float32Array; real: Float32Array };
  /** Called after each sampling batch with the samples done and n. */
  onBatch?: (done: number, total: number) => void;
  /**
   * A latent field: it samples codes of `dim` values, which `fn` turns into images of
   * `dataShape` before they are scored (an autoencoder's decoder).
   */
  decode?: { dim: number; fn: (codes: Float32Array) => Promise<Float32Array> };
}

/** What {@linkcode evaluateImageField} returns. */
export type ImageFieldScores = Required<ImageScores> & {
  /** Samples scored. */
  numSamples: number;
  /** Sampler steps. */
  steps: number;
  /** Guidance scale. */
  cfgScale: number;
  /** Sampler. */
  sampler: SamplerMethod;
};

/**
 * Sample a class-conditional image velocity (ours: t = 0 noise, t = 1 data) with balanced
 * labels and classifier-free guidance (null label `numClasses`), then
 * {@linkcode scoreImages} against real images: FD, the real-train-vs-test floor, and class
 * agreement overall and per class. A latent field's codes are decoded first (`decode`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { evaluateImageField, nn, randn, type Tensor } from "../../mod.ts";
 * const clf = new nn.MLPClassifier({ inputDim: 4, hidden: [6], numClasses: 2, seed: 0 });
 * const real = await randn([40, 4], { seed: 3 }).data();
 * // v = −x: the midpoint steps shrink the noise toward 0 for either label.
 * const s = await evaluateImageField((x: Tensor) => x.mul(-1), {
 *   dataShape: [4], numClasses: 2, classifier: clf, n: 20, steps: 2, cfgScale: 3, seed: 0,
 *   images: { test: real, real: real.subarray(0, 80) },
 * });
 * assert.ok(Math.abs(s.fdRealTrainTest) < 1e-6); // the floor's images are the reference's
 * assert.ok(s.fd > 0 && s.classAcc >= 0 && s.classAcc <= 1);
 * assert.equal(s.classAccPerClass.length, 2);
 * ```
 */
export async function evaluateImageField(
  velocity: VelocityFn,
  o: ImageFieldOptions,
): Promise<ImageFieldScores> {
  const C = o.numClasses, n = o.n, sampler = o.sampler ?? "midpoint";
  const width = o.dataShape.reduce((a, b) => a * b, 1);
  if (o.classifier.inputDim !== width || o.classifier.numClasses !== C) {
    throw new RangeError(
      `The classifier takes ${o.classifier.inputDim} inputs and tells ${o.classifier.numClasses} ` +
        `classes, but the samples have shape [${o.dataShape}] and ${C} classes`,
    );
  }
  const images = o.images ?? {
    test: await referenceData("fashion-mnist", n, o.seed),
    real: (await loadFashionMnist({ split: "train", limit: n })).images,
  };
  for (const [k, a] of Object.entries(images)) {
    if (a.length < n * width) {
      throw new RangeError(
        `Expected at least ${n} ${k} images of ${width} values but found ${a.length / width}`,
      );
    }
  }
  const labels = Float32Array.from({ length: n }, (_, i) => i % C);
  const g = await generateSamples(velocity, [o.decode?.dim ?? width], {
    n,
    sampler,
    steps: o.steps,
    seed: o.seed,
    nullLabel: C,
    labels,
    cfgScale: o.cfgScale,
    batch: o.batch ?? 64,
    onBatch: o.onBatch,
  });
  const x = o.decode ? await o.decode.fn(g.x) : g.x;
  if (x.length !== n * width) {
    throw new RangeError(
      `Expected ${n} decoded images of ${width} values but found ${x.length} values`,
    );
  }
  const s = await scoreImages(o.classifier, x, {
    reference: images.test.subarray(0, n * width),
    real: images.real.subarray(0, n * width),
    labels,
  });
  return {
    fd: s.fd!,
    fdRealTrainTest: s.fdRealTrainTest!,
    classAcc: s.classAcc!,
    classAccPerClass: s.classAccPerClass!,
    numSamples: n,
    steps: o.steps,
    cfgScale: o.cfgScale,
    sampler,
  };
}
