/**
 * @file Latent flow matching (seed 001's "advanced usage"; `train:cfm --latents`): the flow
 * model learns the distribution of a trained autoencoder's codes instead of pixels. Every
 * training image is encoded once (μ, then normalised per dimension with the autoencoder's
 * stored mean and std, so the flow sees roughly unit-variance data like its N(0, I) source),
 * and samples are decoded back to images (decode(latentMean + latentStd·z)) wherever a run's
 * samples leave the model: the end-of-training figure, `sample` and `eval`.
 *
 * The run's config records the autoencoder's path and its normalisation; reading the run back
 * re-opens that file and refuses it if its normalisation no longer matches (the autoencoder
 * was retrained or replaced since), rather than decoding with the wrong decoder.
 * @module
 */
import { tensor } from "../ops/mod.ts";
import { gatherRows, type ImageDataset } from "../data/mod.ts";
import {
  checkAutoencoderData,
  decodeCodes,
  encodeImages,
  type LatentNormalisation,
  loadAutoencoder,
  type LoadedAutoencoder,
} from "./autoencoder.ts";
import type { CfmData } from "./cfm.ts";
import type { LabelledSet } from "./stablevm.ts";

/** What a latent flow run records in its config under `latents`. */
export interface LatentSpec extends LatentNormalisation {
  /** The autoencoder checkpoint file. */
  autoencoder: string;
  /** Width of the codes (the flow model's data shape is [latentDim]). */
  latentDim: number;
  /** Shape of the decoded images, e.g. [1, 28, 28]. */
  dataShape: number[];
}

/**
 * The `latents` record of a run that trains on `ae`'s codes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { latentSpecOf, nn } from "../../mod.ts";
 * const config = { dataShape: [1, 2, 2], latentDim: 2, hidden: [3], seed: 0, latentMean: [0, 1], latentStd: [1, 2] };
 * const ae = { path: "ae.safetensors", model: new nn.VAE({ inputDim: 4, latentDim: 2, hidden: [3] }), config, step: 5 };
 * assert.deepEqual(latentSpecOf(ae), { autoencoder: "ae.safetensors", latentDim: 2, dataShape: [1, 2, 2], latentMean: [0, 1], latentStd: [1, 2] });
 * ```
 */
export function latentSpecOf(ae: LoadedAutoencoder): LatentSpec {
  const c = ae.config;
  return {
    autoencoder: ae.path,
    latentDim: c.latentDim,
    dataShape: [...c.dataShape],
    latentMean: [...c.latentMean],
    latentStd: [...c.latentStd],
  };
}

/**
 * The training data of a latent run: every image of `ds` encoded once (μ, normalised) into
 * rows [n, latentDim], sampled with replacement by the run's stream like `cfmData`, with the
 * images' labels. A `RangeError` naming `--latents` refuses an autoencoder whose image shape
 * is not the dataset's.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, latentCfmData, nn } from "../../mod.ts";
 * const config = { dataShape: [1, 2, 2], latentDim: 2, hidden: [3], seed: 0, latentMean: [0, 0], latentStd: [1, 1] };
 * const ae = { path: "ae", model: new nn.VAE({ inputDim: 4, latentDim: 2, hidden: [3], seed: 0 }), config, step: 1 };
 * const ds = { images: new Float32Array(12), labels: new Float32Array([0, 1, 2]), n: 3, shape: [1, 2, 2] as [number, number, number], numClasses: 3, classNames: ["a", "b", "c"] };
 * const d = await latentCfmData(ae, ds);
 * assert.deepEqual(d.shape, [2]);
 * const { x1, y } = d.batch(5, new Generator(0));
 * assert.deepEqual([x1.shape, y!.shape], [[5, 2], [5]]);
 * ```
 */
export async function latentCfmData(ae: LoadedAutoencoder, ds: ImageDataset): Promise<CfmData> {
  const d = ae.config.latentDim;
  const codes = await normalisedCodes(ae, ds);
  return {
    shape: [d],
    numClasses: ds.numClasses,
    classNames: ds.classNames,
    batch: (b, gen) => {
      const u = gen.uniformHost(b);
      const idx = Array.from(u, (v) => Math.min(ds.n - 1, Math.floor(v * ds.n)));
      return {
        x1: tensor(gatherRows(codes, d, idx), [b, d]),
        y: tensor(Float32Array.from(idx, (i) => ds.labels[i]!)),
      };
    },
    reference: (n) => {
      const idx = Array.from({ length: Math.min(n, ds.n) }, (_, i) => i);
      return Promise.resolve({
        x: gatherRows(codes, d, idx),
        labels: idx.map((i) => ds.labels[i]!),
      });
    },
  };
}

// Every image of ds encoded once (μ), normalised per dimension with the autoencoder's stored
// mean and std.
async function normalisedCodes(ae: LoadedAutoencoder, ds: ImageDataset): Promise<Float32Array> {
  checkAutoencoderData(ae, ds.shape, "--latents", `the dataset`);
  const d = ae.config.latentDim;
  const codes = await encodeImages(ae.model, ds.images);
  const { latentMean: m, latentStd: s } = ae.config;
  for (let i = 0; i < codes.length; i++) codes[i] = (codes[i]! - m[i % d]!) / s[i % d]!;
  return codes;
}

/**
 * The rows of a latent `train:stablevm` run: every image of `ds` encoded once (μ, normalised)
 * with its label, and `decoded` turning sampled rows back into images with `ae` (keep its
 * model alive while the set is used). A `RangeError` naming `--latents` refuses an autoencoder
 * whose image shape is not the dataset's.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { latentLabelledSet, nn } from "../../mod.ts";
 * const config = { dataShape: [1, 2, 2], latentDim: 2, hidden: [3], seed: 0, latentMean: [0, 0], latentStd: [1, 1] };
 * const ae = { path: "ae", model: new nn.VAE({ inputDim: 4, latentDim: 2, hidden: [3], seed: 0 }), config, step: 1 };
 * const ds = { images: new Float32Array(12), labels: new Float32Array([0, 1, 2]), n: 3, shape: [1, 2, 2] as [number, number, number], numClasses: 3, classNames: ["a", "b", "c"] };
 * const set = await latentLabelledSet(ae, ds);
 * assert.deepEqual([set.n, set.dim, [...set.labels]], [3, 2, [0, 1, 2]]);
 * assert.equal((await set.decoded!.decode(new Float32Array(4))).length, 8); // two 2 × 2 images
 * ```
 */
export async function latentLabelledSet(
  ae: LoadedAutoencoder,
  ds: ImageDataset,
): Promise<LabelledSet> {
  const x = await normalisedCodes(ae, ds);
  return {
    x,
    labels: Int32Array.from(ds.labels),
    n: ds.n,
    dim: ae.config.latentDim,
    numClasses: ds.numClasses,
    gmm: null,
    classNames: ds.classNames,
    decoded: { shape: [...ds.shape], decode: (rows) => decodeLatents(ae, rows) },
  };
}

/**
 * Re-open the autoencoder a latent run recorded, refusing (`RangeError` naming the file and
 * the run's `latents`) one whose normalisation differs from the recorded one: a decoder other
 * than the one the run's codes came from would turn its samples into noise.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { openLatentAutoencoder } from "../../mod.ts";
 * const spec = { autoencoder: "gone.safetensors", latentDim: 2, dataShape: [1, 2, 2], latentMean: [0, 0], latentStd: [1, 1] };
 * await assert.rejects(openLatentAutoencoder(spec), /the run's --latents gone.safetensors: no such file/);
 * ```
 */
export async function openLatentAutoencoder(spec: LatentSpec): Promise<LoadedAutoencoder> {
  const ae = await loadAutoencoder(spec.autoencoder, "the run's --latents");
  const same = (a: number[], b: number[]) =>
    a.length === b.length && a.every((v, i) => Math.abs(v - b[i]!) <= 1e-6 * (1 + Math.abs(v)));
  if (
    ae.config.latentDim !== spec.latentDim ||
    !same(ae.config.latentMean, spec.latentMean) || !same(ae.config.latentStd, spec.latentStd)
  ) {
    ae.model.dispose();
    throw new RangeError(
      `the run's --latents ${ae.path}: not the autoencoder this run was trained on (its ` +
        `latent width or normalisation differs from the run's config: retrained or replaced?)`,
    );
  }
  return ae;
}

/**
 * Decode a latent run's samples `z` [n, latentDim] (normalised codes) to images
 * [n, ...dataShape] with its autoencoder: decode(latentMean + latentStd·z).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeLatents, nn } from "../../mod.ts";
 * const model = new nn.VAE({ inputDim: 4, latentDim: 1, hidden: [3], seed: 0 });
 * const config = { dataShape: [1, 2, 2], latentDim: 1, hidden: [3], seed: 0, latentMean: [1], latentStd: [2] };
 * const x = await decodeLatents({ path: "mem", model, config, step: 0 }, new Float32Array([0, 1]));
 * assert.equal(x.length, 8);
 * ```
 */
export function decodeLatents(ae: LoadedAutoencoder, z: Float32Array): Promise<Float32Array> {
  const d = ae.config.latentDim, { latentMean: m, latentStd: s } = ae.config;
  if (z.length % d !== 0) {
    throw new RangeError(`Expected codes [n, ${d}] but found ${z.length} values`);
  }
  return decodeCodes(ae.model, Float32Array.from(z, (v, i) => m[i % d]! + s[i % d]! * v));
}

/**
 * What a run's samples look like once they leave the model: for a latent run, its samples
 * decoded to images (re-opening the recorded autoencoder; see
 * {@linkcode openLatentAutoencoder}) and the images' shape; otherwise `x` and `dataShape`
 * unchanged.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { samplesAsData } from "../../mod.ts";
 * const r = await samplesAsData({ dataShape: [2] }, new Float32Array([1, 2]));
 * assert.deepEqual([[...r.x], r.shape], [[1, 2], [2]]);
 * ```
 */
export async function samplesAsData(
  config: { dataShape: number[]; latents?: unknown },
  x: Float32Array,
): Promise<{ x: Float32Array; shape: number[] }> {
  const spec = config.latents;
  if (spec === undefined || spec === null) return { x, shape: config.dataShape };
  if (!isLatentSpec(spec)) {
    throw new RangeError(
      `Expected the run's config "latents" to record an autoencoder (path, latentDim, ` +
        `dataShape, latentMean, latentStd) but found ${JSON.stringify(spec)}`,
    );
  }
  const ae = await openLatentAutoencoder(spec);
  try {
    return { x: await decodeLatents(ae, x), shape: [...spec.dataShape] };
  } finally {
    ae.model.dispose();
  }
}

/** Whether `v` has the fields of a {@linkcode LatentSpec}. */
function isLatentSpec(v: unknown): v is LatentSpec {
  const s = v as Partial<LatentSpec> | null;
  return typeof s === "object" && s !== null && typeof s.autoencoder === "string" &&
    Number.isInteger(s.latentDim) && Array.isArray(s.dataShape) &&
    Array.isArray(s.latentMean) && Array.isArray(s.latentStd);
}

/** What {@linkcode withLatents} needs of a flow run's configuration. */
export interface LatentRunConfig {
  /** The dataset the codes come from (must be "fashion-mnist"). */
  dataset: string;
  /** The velocity network (an MLP, "velocity-mlp" or "adaln-mlp": codes are flat vectors). */
  model: string;
  /** Shape of one training sample (set to [latentDim]). */
  dataShape: number[];
  /** The flat-pixel MLP's input skip (turned off for codes). */
  inputSkip?: boolean;
  /** REPA (refused: it aligns a DiT's image tokens). */
  useProjLoss?: boolean;
  /** `--latents` as given (a path), a recorded autoencoder (a resumed run), or null. */
  latents: LatentSpec | string | null;
}

/**
 * Settle a flow run's `--latents`: with a path, load that autoencoder (errors name
 * `--latents` and say what was expected) and check the run can train on its codes (Fashion-MNIST,
 * an MLP model, no REPA); with a recorded autoencoder (a resumed run), re-open it
 * (see {@linkcode openLatentAutoencoder}). Returns the configuration to store (`latents`
 * recorded, `dataShape` [latentDim], no input skip) and the autoencoder (dispose its model),
 * or the configuration unchanged and null without latents.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { withLatents } from "../../mod.ts";
 * const c = { dataset: "moons", model: "velocity-mlp", dataShape: [2], latents: null };
 * assert.deepEqual(await withLatents(c), { config: c, ae: null });
 * await assert.rejects(withLatents({ ...c, latents: "runs/ae" }), /--latents runs\/ae: .*--dataset fashion-mnist/);
 * ```
 */
export async function withLatents<C extends LatentRunConfig>(
  c: C,
): Promise<{ config: C; ae: LoadedAutoencoder | null }> {
  if (c.latents === null || c.latents === undefined) return { config: c, ae: null };
  if (typeof c.latents !== "string") {
    return { config: c, ae: await openLatentAutoencoder(c.latents) };
  }
  const flag = `--latents ${c.latents}`;
  if (c.dataset !== "fashion-mnist") {
    throw new RangeError(
      `${flag}: the codes are of Fashion-MNIST images; use it with --dataset fashion-mnist, ` +
        `not ${c.dataset}`,
    );
  }
  if (c.model !== "velocity-mlp" && c.model !== "adaln-mlp") {
    throw new RangeError(
      `${flag}: codes are flat vectors for an MLP (--model velocity-mlp in train:cfm, ` +
        `adaln-mlp in train:stablevm); ${c.model} needs images`,
    );
  }
  if (c.useProjLoss) {
    throw new RangeError(`${flag}: --use-proj-loss aligns a DiT's image tokens, not codes`);
  }
  const ae = await loadAutoencoder(c.latents, "--latents", {
    dataShape: [1, 28, 28],
    dataset: "fashion-mnist",
  });
  const spec = latentSpecOf(ae);
  return {
    config: { ...c, latents: spec, dataShape: [spec.latentDim], inputSkip: false },
    ae,
  };
}
