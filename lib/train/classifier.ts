/**
 * @file A small image classifier trained by this toolkit (`deno task train:classifier`) and
 * what it measures: test accuracy, per-class agreement of generated samples with their
 * conditioning label, and a Fréchet distance (FD) between Gaussian fits of its penultimate
 * features. That FD is not the Inception FID: its feature space is a 784→256→128→10 MLP
 * trained on Fashion-MNIST, so its values are comparable only with each other (same
 * classifier checkpoint, same sample counts), never with published FIDs.
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import { argmax, logSoftmax, mean, oneHot, sum, tensor } from "../ops/mod.ts";
import * as nn from "../nn/mod.ts";
import { AdamW } from "../optim/mod.ts";
import { gatherRows, type ImageDataset } from "../data/mod.ts";
import { type Checkpoint, CheckpointError, FileFormatError, loadCheckpoint } from "../io/mod.ts";
import { type GaussianStats, gaussianStats } from "../metrics/mod.ts";
import { denoApi, isNotFound } from "../_util.ts";
import type { StepContext, Trainer } from "./fit.ts";

/**
 * Run `fn` on row blocks of `x` ([n, width] host) and concatenate the host results ([n, outWidth]):
 * a classifier's features or predictions, an autoencoder's codes or images.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { mapRows } from "./classifier.ts";
 * import { mul } from "../ops/mod.ts";
 * const y = await mapRows(new Float32Array([1, 2, 3, 4, 5, 6]), 2, 2, 2, (t) => mul(t, 2));
 * assert.deepEqual([...y], [2, 4, 6, 8, 10, 12]);
 * ```
 */
export async function mapRows(
  x: Float32Array,
  width: number,
  outWidth: number,
  batch: number,
  fn: (t: Tensor) => Tensor,
): Promise<Float32Array> {
  if (x.length % width !== 0) {
    throw new RangeError(`Expected rows of ${width} values but found ${x.length} values`);
  }
  const n = x.length / width, out = new Float32Array(n * outWidth);
  for (let i = 0; i < n; i += batch) {
    const m = Math.min(batch, n - i);
    const r = tidy(() => fn(tensor(x.subarray(i * width, (i + m) * width), [m, width])));
    out.set(await r.data(), i * outWidth);
    r.dispose();
  }
  return out;
}

/**
 * The task name stored in a classifier checkpoint's config.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CLASSIFIER_TASK } from "../../mod.ts";
 * assert.equal(CLASSIFIER_TASK, "train:classifier");
 * ```
 */
export const CLASSIFIER_TASK = "train:classifier";

/** The architecture of a classifier (stored in its checkpoint's config). */
export interface ClassifierModelConfig {
  /** Input width (784 for Fashion-MNIST). */
  inputDim: number;
  /** Hidden widths; the last is the FD feature width. */
  hidden: number[];
  /** Classes. */
  numClasses: number;
  /** Seed; the weights are initialised from `seed + 1`. */
  seed: number;
}

/** Settings of {@linkcode classifierTrainer}. */
export interface ClassifierTrainerConfig extends ClassifierModelConfig {
  /** Batch size. */
  batchSize: number;
  /** AdamW learning rate. */
  lr: number;
  /** AdamW decoupled weight decay. */
  weightDecay: number;
  /**
   * Random translation of each training image by up to this many pixels in x and y (filled
   * with the background, −1), for square single-channel images; default 0 (none). An MLP has
   * no translation invariance of its own: ±2 px lifts Fashion-MNIST test accuracy by ~1 point.
   */
  augmentShift?: number;
}

/**
 * Copy `n` square single-channel images (side² values each, background −1) with image `i`
 * translated by (dx[i], dy[i]) pixels; pixels shifted in from outside are −1.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { shiftImages } from "../../mod.ts";
 * // One 3×3 image with a single bright pixel in the centre, moved one pixel right and up.
 * const x = new Float32Array([-1, -1, -1, -1, 1, -1, -1, -1, -1]);
 * assert.deepEqual([...shiftImages(x, 3, [1], [-1])], [-1, -1, 1, -1, -1, -1, -1, -1, -1]);
 * ```
 */
export function shiftImages(
  x: Float32Array,
  side: number,
  dx: ArrayLike<number>,
  dy: ArrayLike<number>,
): Float32Array {
  const px = side * side, n = x.length / px;
  if (!Number.isInteger(n) || dx.length !== n || dy.length !== n) {
    throw new RangeError(
      `Expected ${side}×${side} images and one shift per image but found ${x.length} values, ` +
        `${dx.length} x shifts and ${dy.length} y shifts`,
    );
  }
  const out = new Float32Array(x.length).fill(-1);
  for (let i = 0; i < n; i++) {
    const sx = dx[i]!, sy = dy[i]!, o = i * px;
    for (let r = Math.max(0, sy); r < Math.min(side, side + sy); r++) {
      const from = o + (r - sy) * side;
      for (let c = Math.max(0, sx); c < Math.min(side, side + sx); c++) {
        out[o + r * side + c] = x[from + c - sx]!;
      }
    }
  }
  return out;
}

/**
 * Build the classifier a config describes (fresh weights from `seed + 1`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildClassifier } from "../../mod.ts";
 * const m = buildClassifier({ inputDim: 784, hidden: [256, 128], numClasses: 10, seed: 0 });
 * assert.equal(m.numParameters(), 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);
 * m.dispose();
 * ```
 */
export function buildClassifier(c: ClassifierModelConfig): nn.MLPClassifier {
  return new nn.MLPClassifier({
    inputDim: c.inputDim,
    hidden: c.hidden,
    numClasses: c.numClasses,
    seed: c.seed + 1,
  });
}

/**
 * Mean cross-entropy of logits [B, C] against integer labels [B].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { crossEntropy, tensor } from "../../mod.ts";
 * const l = await crossEntropy(tensor([[0, 0], [Math.log(3), 0]]), tensor([0, 0])).item();
 * assert.ok(Math.abs(l - (Math.log(2) + Math.log(4 / 3)) / 2) < 1e-6);
 * ```
 */
export function crossEntropy(logits: Tensor, labels: Tensor): Tensor {
  return tidy(() => {
    const C = logits.shape[logits.rank - 1]!;
    return mean(sum(oneHot(labels, C).mul(logSoftmax(logits, -1)), 1)).mul(-1);
  });
}

/**
 * A trainer for the classifier: batches drawn with replacement from `data` by the run's
 * stream, cross-entropy loss (`training/loss_ce`), AdamW. Hand it to `fit`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { classifierTrainer, createRun, fit, Generator } from "../../mod.ts";
 * // Two separable "images" of 4 pixels.
 * const images = new Float32Array([1, 1, 0, 0, 0, 0, 1, 1]);
 * const data = { images, labels: new Float32Array([0, 1]), n: 2 };
 * const cfg = { inputDim: 4, hidden: [8], numClasses: 2, seed: 0, batchSize: 8, lr: 0.05,
 *   weightDecay: 0 };
 * const dir = await Deno.makeTempDir();
 * const tr = classifierTrainer(cfg, data);
 * const run = await createRun("train:classifier", { outputDir: dir, config: cfg });
 * const r = await fit(tr, { run, generator: new Generator(0), maxSteps: 40, logEvery: 40, progress: false });
 * assert.ok(r.loss < 0.1);
 * tr.model.dispose(); tr.optimizer.dispose();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function classifierTrainer(
  c: ClassifierTrainerConfig,
  data: Pick<ImageDataset, "images" | "labels" | "n">,
): Trainer<nn.MLPClassifier> {
  const model = buildClassifier(c);
  const row = data.images.length / data.n;
  if (row !== c.inputDim) {
    throw new RangeError(`Expected ${c.inputDim} values per example but found ${row}`);
  }
  const shift = c.augmentShift ?? 0, side = Math.round(Math.sqrt(row));
  if (!Number.isInteger(shift) || shift < 0 || (shift > 0 && side * side !== row)) {
    throw new RangeError(
      `Expected augmentShift to be an integer >= 0 (and square images when > 0) but found ` +
        `${shift} with ${row} values per image`,
    );
  }
  let batch: { x: Tensor; y: Tensor } | null = null;
  return {
    model,
    optimizer: new AdamW({ lr: c.lr, weightDecay: c.weightDecay }),
    lossMetric: "training/loss_ce",
    prepare(ctx: StepContext<nn.MLPClassifier>) {
      const u = ctx.generator.uniformHost(c.batchSize);
      const idx = Array.from(u, (v) => Math.min(data.n - 1, Math.floor(v * data.n)));
      let x = gatherRows(data.images, row, idx);
      if (shift > 0) {
        const s = ctx.generator.uniformHost(2 * c.batchSize);
        const d = (v: number) => Math.min(shift, Math.floor(v * (2 * shift + 1)) - shift);
        x = shiftImages(x, side, s.subarray(0, c.batchSize).map(d), s.subarray(c.batchSize).map(d));
      }
      batch = {
        x: ctx.track(tensor(x, [c.batchSize, row])),
        y: ctx.track(tensor(Float32Array.from(idx, (i) => data.labels[i]!))),
      };
    },
    loss() {
      return { loss: crossEntropy(model.forward(batch!.x), batch!.y) };
    },
  };
}

/**
 * Penultimate features [n, featureDim] of `n = x.length / inputDim` images (host values in
 * [−1, 1], any [n, ...] layout), computed `batch` rows at a time.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { classifierFeatures, nn } from "../../mod.ts";
 * const c = new nn.MLPClassifier({ inputDim: 4, hidden: [3], numClasses: 2, seed: 0 });
 * const f = await classifierFeatures(c, new Float32Array(12).fill(0.5), 2);
 * assert.equal(f.length, 9);
 * assert.deepEqual([...f.subarray(0, 3)], [...f.subarray(6, 9)]); // same input, same features
 * ```
 */
export function classifierFeatures(
  model: nn.MLPClassifier,
  x: Float32Array,
  batch = 1000,
): Promise<Float32Array> {
  return mapRows(x, model.inputDim, model.featureDim, batch, (t) => model.features(t));
}

/**
 * Predicted classes (argmax of the logits) of `x.length / inputDim` images.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { classifierPredict, nn } from "../../mod.ts";
 * const c = new nn.MLPClassifier({ inputDim: 2, hidden: [4], numClasses: 3, seed: 0 });
 * const p = await classifierPredict(c, new Float32Array([0, 1, 1, 0]));
 * assert.equal(p.length, 2);
 * assert.ok(p.every((k) => Number.isInteger(k) && k >= 0 && k < 3));
 * ```
 */
export async function classifierPredict(
  model: nn.MLPClassifier,
  x: Float32Array,
  batch = 1000,
): Promise<Int32Array> {
  const p = await mapRows(x, model.inputDim, 1, batch, (t) => argmax(model.forward(t), 1));
  return Int32Array.from(p);
}

/** What {@linkcode classifierAccuracy} returns. */
export interface AccuracyResult {
  /** Fraction of predictions equal to the labels. */
  accuracy: number;
  /** The same per label (NaN for a label that does not occur). */
  perClass: number[];
}

/**
 * Accuracy of the classifier on images `x` with integer `labels` (overall and per class).
 * For generated samples, `labels` are the conditioning labels: the result is the class
 * agreement of the samples.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { classifierAccuracy, classifierPredict, nn } from "../../mod.ts";
 * const c = new nn.MLPClassifier({ inputDim: 2, hidden: [4], numClasses: 2, seed: 0 });
 * const x = new Float32Array([0, 1, 1, 0, 3, 3]);
 * const p = await classifierPredict(c, x);
 * const r = await classifierAccuracy(c, x, Float32Array.from(p));
 * assert.equal(r.accuracy, 1); // agreement with its own predictions
 * ```
 */
export async function classifierAccuracy(
  model: nn.MLPClassifier,
  x: Float32Array,
  labels: ArrayLike<number>,
  batch = 1000,
): Promise<AccuracyResult> {
  const p = await classifierPredict(model, x, batch);
  if (p.length !== labels.length) {
    throw new RangeError(`Expected ${p.length} labels (one per image) but found ${labels.length}`);
  }
  const C = model.numClasses;
  const hit = new Array<number>(C).fill(0), tot = new Array<number>(C).fill(0);
  let ok = 0;
  for (let i = 0; i < p.length; i++) {
    const y = labels[i]!;
    if (!(Number.isInteger(y) && y >= 0 && y < C)) {
      throw new RangeError(`Expected labels in [0, ${C - 1}] but found ${y} at ${i}`);
    }
    tot[y]!++;
    if (p[i] === y) {
      ok++;
      hit[y]!++;
    }
  }
  return { accuracy: ok / p.length, perClass: hit.map((h, k) => h / tot[k]!) };
}

/**
 * Gaussian fit (mean, covariance; f64) of the classifier's features of `x`: the reference
 * statistics of the FD (see `frechetDistance`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { featureStats, nn } from "../../mod.ts";
 * const c = new nn.MLPClassifier({ inputDim: 2, hidden: [3], numClasses: 2, seed: 0 });
 * const s = await featureStats(c, new Float32Array([0, 1, 1, 0, 2, 2]));
 * assert.equal(s.n, 3);
 * assert.equal(s.cov.length, 9);
 * ```
 */
export async function featureStats(
  model: nn.MLPClassifier,
  x: Float32Array,
  batch = 1000,
): Promise<GaussianStats> {
  return gaussianStats(await classifierFeatures(model, x, batch), model.featureDim);
}

/** A classifier read from its checkpoint. */
export interface LoadedClassifier {
  /** The checkpoint file read. */
  path: string;
  /** The model (eval mode). */
  model: nn.MLPClassifier;
  /** Its training configuration. */
  config: ClassifierModelConfig & Record<string, unknown>;
  /** The checkpoint's step. */
  step: number;
}

/**
 * Load a `train:classifier` checkpoint: a `.safetensors` file or a run directory (its
 * `checkpoints/last.safetensors`). Missing or foreign files raise a `RangeError` naming the
 * path and the command that makes one.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadClassifier } from "../../mod.ts";
 * await assert.rejects(loadClassifier("no/such/dir"), /deno task train:classifier/);
 * ```
 */
export async function loadClassifier(spec: string): Promise<LoadedClassifier> {
  const fs = denoApi("loadClassifier", "build the model and call loadStateDict");
  let path = spec.replace(/\/+$/, "");
  try {
    if ((await fs.stat(path)).isDirectory) path = `${path}/checkpoints/last.safetensors`;
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  let ck: Checkpoint;
  try {
    ck = await loadCheckpoint(path);
  } catch (e) {
    const why = isNotFound(e)
      ? "no such file"
      : e instanceof CheckpointError || e instanceof FileFormatError
      ? (e as Error).message
      : `cannot be read (${(e as Error).message})`;
    throw new RangeError(
      `--classifier ${spec}: ${why}; train one with deno task train:classifier`,
    );
  }
  const cfg = ck.config as Record<string, unknown> | undefined;
  if (!cfg || cfg.task !== CLASSIFIER_TASK || !Array.isArray(cfg.hidden)) {
    throw new RangeError(
      `--classifier ${path}: not a ${CLASSIFIER_TASK} checkpoint (deno task train:classifier)`,
    );
  }
  const config = cfg as LoadedClassifier["config"];
  const model = buildClassifier(config);
  try {
    model.loadStateDict(ck.model);
  } catch (e) {
    model.dispose();
    throw new RangeError(`--classifier ${path}: weights do not fit (${(e as Error).message})`);
  }
  for (const sec of [ck.model, ck.ema, ck.optimizer, ck.state]) {
    for (const t of Object.values(sec ?? {})) if ("dispose" in t) t.dispose();
  }
  model.eval();
  return { path, model, config, step: ck.step };
}

/**
 * Convenience for host data: gather rows `idx` of an image set as a flat Float32Array.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { imageRows } from "../../mod.ts";
 * const ds = { images: new Float32Array([1, 2, 3, 4, 5, 6]), n: 3 };
 * assert.deepEqual([...imageRows(ds, [2, 0])], [5, 6, 1, 2]);
 * ```
 */
export function imageRows(
  ds: Pick<ImageDataset, "images" | "n">,
  idx: ArrayLike<number>,
): Float32Array {
  return gatherRows(ds.images, ds.images.length / ds.n, idx);
}
