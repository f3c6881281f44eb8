/**
 * @file The autoencoder of latent flow matching (`deno task train:autoencoder`): an MLP VAE
 * (`nn.VAE`) trained with reconstruction MSE + β·KL, the per-dimension normalisation of its
 * codes (mean and std of μ over the training set, stored in the checkpoint's config so flow
 * models train on unit-variance latents), batched encode/decode on host arrays, and reading
 * its checkpoint back with errors that name the flag it came from (`--latents`, `--encoder`).
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import { mean, sum, tensor } from "../ops/mod.ts";
import * as nn from "../nn/mod.ts";
import { Adam } from "../optim/mod.ts";
import { gatherRows, type ImageDataset } from "../data/mod.ts";
import { type Checkpoint, CheckpointError, FileFormatError, loadCheckpoint } from "../io/mod.ts";
import { denoApi, isNotFound } from "../_util.ts";
import type { SampleContext, StepContext, Trainer } from "./fit.ts";
import { mapRows } from "./classifier.ts";

/**
 * The task name stored in an autoencoder checkpoint's config.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { AUTOENCODER_TASK } from "../../mod.ts";
 * assert.equal(AUTOENCODER_TASK, "train:autoencoder");
 * ```
 */
export const AUTOENCODER_TASK = "train:autoencoder";

/** The architecture of an autoencoder (stored in its checkpoint's config). */
export interface AutoencoderModelConfig {
  /** Shape of one image, e.g. [1, 28, 28]. */
  dataShape: number[];
  /** Width of the codes. */
  latentDim: number;
  /** Encoder hidden widths (the decoder mirrors them). */
  hidden: number[];
  /** Seed; the weights are initialised from `seed + 1`. */
  seed: number;
}

/**
 * The normalisation of the codes: per-dimension mean and std of μ over the training set.
 * Flow models train on (μ − latentMean) / latentStd and decode latentMean + latentStd·z.
 */
export interface LatentNormalisation {
  /** Mean of μ per latent dimension. */
  latentMean: number[];
  /** Standard deviation of μ per latent dimension. */
  latentStd: number[];
}

/** Settings of {@linkcode autoencoderTrainer}. */
export interface AutoencoderTrainerConfig extends AutoencoderModelConfig {
  /** Batch size. */
  batchSize: number;
  /** Adam learning rate. */
  lr: number;
  /** Weight of the KL term against the per-pixel reconstruction MSE. */
  beta: number;
}

/**
 * Build the VAE a config describes (fresh weights from `seed + 1`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildAutoencoder } from "../../mod.ts";
 * const m = buildAutoencoder({ dataShape: [1, 28, 28], latentDim: 16, hidden: [512, 256], seed: 0 });
 * assert.equal(m.latentDim, 16);
 * assert.equal(m.inputDim, 784);
 * m.dispose();
 * ```
 */
export function buildAutoencoder(c: AutoencoderModelConfig): nn.VAE {
  return new nn.VAE({
    inputDim: c.dataShape.reduce((a, b) => a * b, 1),
    latentDim: c.latentDim,
    hidden: c.hidden,
    seed: c.seed + 1,
  });
}

/** What {@linkcode vaeLoss} returns (scalars). */
export interface VaeLossTerms {
  /** recon + β·kl. */
  loss: Tensor;
  /** Mean squared error per pixel. */
  recon: Tensor;
  /** KL(q(z | x) ‖ N(0, I)) summed over latent dimensions, averaged over the batch. */
  kl: Tensor;
}

/**
 * The VAE objective: mean((x̂ − x)²) over every pixel plus β times the closed-form
 * KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_d (μ² + σ² − 1 − log σ²), summed over latent dimensions and
 * averaged over the batch. With the MSE per pixel this is, up to a constant factor, the
 * negative ELBO of a Gaussian decoder of variance σ_x² = (784/2)·β on 784 pixels.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor, vaeLoss } from "../../mod.ts";
 * // One example, two pixels, one latent dimension with μ = 1, log σ² = 0: KL = ½·1.
 * const r = vaeLoss(tensor([[0, 1]]), tensor([[0, 0]]), tensor([[1]]), tensor([[0]]), 0.1);
 * assert.ok(Math.abs(await r.recon.item() - 0.5) < 1e-6);
 * assert.ok(Math.abs(await r.kl.item() - 0.5) < 1e-6);
 * assert.ok(Math.abs(await r.loss.item() - 0.55) < 1e-6);
 * ```
 */
export function vaeLoss(
  recon: Tensor,
  x: Tensor,
  mu: Tensor,
  logvar: Tensor,
  beta: number,
): VaeLossTerms {
  const mse = mean(recon.sub(x).square());
  const kl = tidy(() => mean(sum(mu.square().add(logvar.exp()).sub(logvar).sub(1), 1)).mul(0.5));
  return { loss: mse.add(kl.mul(beta)), recon: mse, kl };
}

/**
 * A trainer for the VAE: batches drawn with replacement from `data` by the run's stream,
 * reparameterisation noise from the same stream, Adam, loss `training/loss` with its parts
 * `training/loss_recon` and `training/loss_kl`. After the last step (its `sample` hook,
 * before the final checkpoint) it stores the codes' normalisation ({@linkcode latentStats}
 * of μ over `data`) in `c` itself: pass the same object as `fit`'s `config`, and the final
 * checkpoint carries it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { autoencoderTrainer, createRun, fit, Generator } from "../../mod.ts";
 * // Eight 4-pixel "images": two patterns, ±0.5.
 * const images = Float32Array.from({ length: 32 }, (_, i) => ((i >> 2) % 2 ? 0.5 : -0.5) * (i % 4 < 2 ? 1 : -1));
 * const data = { images, labels: new Float32Array(8), n: 8, shape: [1, 2, 2] as [number, number, number] };
 * const cfg = { dataShape: [1, 2, 2], latentDim: 2, hidden: [8], seed: 0, batchSize: 8, lr: 0.02, beta: 1e-3 };
 * const dir = await Deno.makeTempDir();
 * const tr = autoencoderTrainer(cfg, data);
 * const run = await createRun("train:autoencoder", { outputDir: dir, config: cfg });
 * const r = await fit(tr, { run, generator: new Generator(0), maxSteps: 60, logEvery: 20, progress: false, config: cfg });
 * assert.ok(r.lastMetrics!["training/loss_recon"]! < 0.1); // mean over steps 41–60
 * assert.equal((cfg as { latentStd?: number[] }).latentStd?.length, 2); // set after the last step
 * tr.model.dispose(); tr.optimizer.dispose();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function autoencoderTrainer(
  c: AutoencoderTrainerConfig,
  data: Pick<ImageDataset, "images" | "n" | "shape">,
): Trainer<nn.VAE> {
  const model = buildAutoencoder(c);
  const row = data.images.length / data.n;
  if (data.shape.join(",") !== c.dataShape.join(",") || row !== model.inputDim) {
    model.dispose();
    throw new RangeError(
      `Expected images of shape [${c.dataShape}] but found [${data.shape}] ` +
        `(${row} values per image)`,
    );
  }
  let x: Tensor | null = null;
  return {
    model,
    optimizer: new Adam({ lr: c.lr }),
    lossMetric: "training/loss",
    prepare(ctx: StepContext<nn.VAE>) {
      const u = ctx.generator.uniformHost(c.batchSize);
      const idx = Array.from(u, (v) => Math.min(data.n - 1, Math.floor(v * data.n)));
      x = ctx.track(tensor(gatherRows(data.images, row, idx), [c.batchSize, row]));
    },
    loss(ctx: StepContext<nn.VAE>) {
      // The noise is drawn inside the loss, as cfmLoss draws its own: a traced step replays
      // the draw with the step's own counter.
      const eps = ctx.generator.normal([c.batchSize, c.latentDim]);
      const { recon, mu, logvar } = model.forward(x!, eps);
      const r = vaeLoss(recon, x!, mu, logvar, c.beta);
      return {
        loss: r.loss,
        metrics: { "training/loss_recon": r.recon, "training/loss_kl": r.kl },
      };
    },
    async sample(ctx: SampleContext<nn.VAE>) {
      if (!ctx.final) return;
      Object.assign(c, latentStats(await encodeImages(model, data.images), c.latentDim));
    },
  };
}

/**
 * The codes μ [n, latentDim] of `n = x.length / inputDim` images (host values in [−1, 1]),
 * computed `batch` rows at a time.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { encodeImages, nn } from "../../mod.ts";
 * const vae = new nn.VAE({ inputDim: 4, latentDim: 2, hidden: [3], seed: 0 });
 * const z = await encodeImages(vae, new Float32Array(12).fill(0.5), 2);
 * assert.equal(z.length, 6);
 * assert.deepEqual([...z.subarray(0, 2)], [...z.subarray(4, 6)]); // same image, same code
 * ```
 */
export function encodeImages(model: nn.VAE, x: Float32Array, batch = 1000): Promise<Float32Array> {
  return mapRows(x, model.inputDim, model.latentDim, batch, (t) => model.encode(t));
}

/**
 * Images [n, inputDim] in [−1, 1] decoded from codes `z` [n, latentDim] (host).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeCodes, nn } from "../../mod.ts";
 * const vae = new nn.VAE({ inputDim: 4, latentDim: 2, hidden: [3], seed: 0 });
 * const x = await decodeCodes(vae, new Float32Array([0, 1, 2, 3]));
 * assert.equal(x.length, 8);
 * ```
 */
export function decodeCodes(model: nn.VAE, z: Float32Array, batch = 1000): Promise<Float32Array> {
  return mapRows(z, model.latentDim, model.inputDim, batch, (t) => model.decode(t));
}

/**
 * Per-dimension mean and standard deviation (population, f64; a zero std becomes 1 so the
 * normalisation stays finite) of codes `z` [n, d].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { latentStats } from "../../mod.ts";
 * const s = latentStats(new Float32Array([1, 5, 3, 5]), 2);
 * assert.deepEqual(s, { latentMean: [2, 5], latentStd: [1, 1] });
 * ```
 */
export function latentStats(z: Float32Array, d: number): LatentNormalisation {
  const n = z.length / d;
  if (!Number.isInteger(n) || n < 1) {
    throw new RangeError(`Expected codes [n, ${d}] with n >= 1 but found ${z.length} values`);
  }
  const m = new Float64Array(d), s = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) m[k]! += z[i * d + k]! / n;
  for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) s[k]! += (z[i * d + k]! - m[k]!) ** 2;
  return {
    latentMean: Array.from(m),
    latentStd: Array.from(s, (v) => Math.sqrt(v / n) || 1),
  };
}

/**
 * Mean squared error per pixel between images `x` and their reconstructions decode(μ(x))
 * (f64 sum on the host).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, reconstructionMse } from "../../mod.ts";
 * const vae = new nn.VAE({ inputDim: 4, latentDim: 2, hidden: [3], seed: 0 });
 * const e = await reconstructionMse(vae, new Float32Array([-1, 1, -1, 1]));
 * assert.ok(e > 0 && e < 4); // tanh outputs lie in [−1, 1]
 * ```
 */
export async function reconstructionMse(
  model: nn.VAE,
  x: Float32Array,
  batch = 1000,
): Promise<number> {
  const y = await decodeCodes(model, await encodeImages(model, x, batch), batch);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (y[i]! - x[i]!) ** 2;
  return s / x.length;
}

/** An autoencoder read from its checkpoint. */
export interface LoadedAutoencoder {
  /** The checkpoint file read. */
  path: string;
  /** The VAE (eval mode). */
  model: nn.VAE;
  /** Its configuration, with the codes' normalisation. */
  config: AutoencoderModelConfig & LatentNormalisation & Record<string, unknown>;
  /** The checkpoint's step. */
  step: number;
}

/** Whether `v` is an array of `n` finite numbers (positive ones with `positive`). */
function numbers(v: unknown, n: number, positive = false): boolean {
  return Array.isArray(v) && v.length === n &&
    v.every((x) => typeof x === "number" && Number.isFinite(x) && (!positive || x > 0));
}

/**
 * Load a `train:autoencoder` checkpoint: a `.safetensors` file or a run directory (its
 * `checkpoints/last.safetensors`). Missing or foreign files, checkpoints without the codes'
 * normalisation (a run stopped before its last step) and, with `expect`, an autoencoder of
 * other images (see {@linkcode checkAutoencoderData}) raise a `RangeError` that starts with
 * `flag` and the path and says what was expected.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadAutoencoder } from "../../mod.ts";
 * await assert.rejects(loadAutoencoder("no/such/dir", "--latents"), /--latents no\/such\/dir: no such file.*train:autoencoder/);
 * ```
 */
export async function loadAutoencoder(
  spec: string,
  flag: string,
  expect?: { dataShape: readonly number[]; dataset: string },
): Promise<LoadedAutoencoder> {
  const fs = denoApi("loadAutoencoder", "build the model and call loadStateDict");
  let path = spec.replace(/\/+$/, "");
  try {
    if ((await fs.stat(path)).isDirectory) path = `${path}/checkpoints/last.safetensors`;
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  const make = "expected a train:autoencoder run directory or checkpoint " +
    "(deno task train:autoencoder makes one)";
  let ck: Checkpoint;
  try {
    ck = await loadCheckpoint(path);
  } catch (e) {
    const why = isNotFound(e)
      ? "no such file"
      : e instanceof CheckpointError || e instanceof FileFormatError
      ? (e as Error).message
      : `cannot be read (${(e as Error).message})`;
    throw new RangeError(`${flag} ${spec}: ${why}; ${make}`);
  }
  const dispose = () => {
    for (const sec of [ck.model, ck.ema, ck.optimizer, ck.state]) {
      for (const t of Object.values(sec ?? {})) if ("dispose" in t) t.dispose();
    }
  };
  const cfg = ck.config as Record<string, unknown> | undefined;
  const d = cfg?.latentDim as number;
  if (
    !cfg || cfg.task !== AUTOENCODER_TASK || !Number.isInteger(d) || d < 1 ||
    !Array.isArray(cfg.dataShape) || !Array.isArray(cfg.hidden)
  ) {
    dispose();
    const task = typeof cfg?.task === "string" ? `a ${cfg.task} checkpoint` : "not a checkpoint";
    throw new RangeError(`${flag} ${path}: ${task} of a known task; ${make}`);
  }
  if (!numbers(cfg.latentMean, d) || !numbers(cfg.latentStd, d, true)) {
    dispose();
    throw new RangeError(
      `${flag} ${path}: the checkpoint has no latent normalisation (latentMean/latentStd of ` +
        `length ${d}); it is written after the last step: finish the run with --resume`,
    );
  }
  const config = cfg as LoadedAutoencoder["config"];
  const model = buildAutoencoder(config);
  try {
    model.loadStateDict(ck.model);
  } catch (e) {
    model.dispose();
    throw new RangeError(`${flag} ${path}: weights do not fit (${(e as Error).message})`);
  } finally {
    dispose();
  }
  model.eval();
  const ae = { path, model, config, step: ck.step };
  try {
    if (expect) checkAutoencoderData(ae, expect.dataShape, flag, expect.dataset);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return ae;
}

/**
 * Refuse (`RangeError` naming `flag`) an autoencoder whose images are not `dataShape`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkAutoencoderData } from "../../mod.ts";
 * const ae = { path: "ae.safetensors", config: { dataShape: [1, 28, 28] } };
 * checkAutoencoderData(ae, [1, 28, 28], "--latents", "fashion-mnist");
 * assert.throws(() => checkAutoencoderData(ae, [3, 32, 32], "--latents", "cifar"), /--latents ae.safetensors: .*\[1,28,28\].*\[3,32,32\]/);
 * ```
 */
export function checkAutoencoderData(
  ae: Pick<LoadedAutoencoder, "path"> & { config: Pick<AutoencoderModelConfig, "dataShape"> },
  dataShape: readonly number[],
  flag: string,
  dataset: string,
): void {
  if (ae.config.dataShape.join(",") !== dataShape.join(",")) {
    throw new RangeError(
      `${flag} ${ae.path}: the autoencoder takes images of shape [${ae.config.dataShape}] but ` +
        `${dataset} has images of shape [${dataShape}]`,
    );
  }
}
