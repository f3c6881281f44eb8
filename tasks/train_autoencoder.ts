/**
 * @file `deno task train:autoencoder` — the autoencoder of latent flow matching (seed 001's
 * "train a VQ-VAE first", here a VAE): an MLP VAE 784 → 512 → 256 → (μ, log σ²) of 16
 * dimensions with a mirrored tanh decoder, trained on Fashion-MNIST with reconstruction MSE +
 * β·KL (`training/loss_recon`, `training/loss_kl`). After the last step the codes'
 * normalisation (per-dimension mean and std of μ over the training set) is stored in the
 * final checkpoint and config.json; the task then writes `samples/reconstructions.png` (test
 * originals above their reconstructions) and `eval.json` and prints the test reconstruction
 * MSE beside the MSE of predicting the mean training image. Its run is what
 * `train:cfm --latents` and `cluster --encoder` take.
 *
 * β = 1e-4 by default: with the MSE averaged over 784 pixels, β·KL is the ELBO of a Gaussian
 * decoder of variance σ² = 392·β ≈ 0.04, about the reconstruction error this VAE reaches
 * (0.05), so neither term is arbitrary. At 1000 steps, β = 1e-3 cost 20% more test MSE
 * (0.064 vs 0.053) for a KL of 16 instead of 43 nats; the flow model only needs codes that
 * decode well, and the per-dimension normalisation takes care of their scale.
 *
 *   deno task train:autoencoder
 *   deno task train:autoencoder --latent-dim 8 --beta 1e-3 --exp-name ae8
 *   deno task train:cfm --dataset fashion-mnist --latents runs/autoencoder-fmnist
 * @module
 */
import {
  autoencoderTrainer,
  type AutoencoderTrainerConfig,
  configFileText,
  decodeCodes,
  encodeImages,
  encodePng,
  fit,
  Generator,
  loadFashionMnist,
  openTrainingRun,
  reconstructionMse,
  withPhase,
} from "../mod.ts";
import { imageGrid, labelledGridSvg } from "../viz/mod.ts";
import { type FlagSpec, parseTaskFlags, parseWidths, runTask, taskSignal } from "../cli/mod.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TRAIN_AUTOENCODER_FLAGS } from "./train_autoencoder.ts";
 * assert.equal(TRAIN_AUTOENCODER_FLAGS.find((f) => f.name === "latent-dim")?.default, 16);
 * ```
 */
export const TRAIN_AUTOENCODER_FLAGS = [
  {
    name: "dataset",
    type: "choice",
    choices: ["fashion-mnist"],
    default: "fashion-mnist",
    help: "images",
  },
  { name: "data-dir", type: "string", help: "IDX folder (default the Debian package's)" },
  { name: "latent-dim", type: "int", default: 16, min: 1, help: "width of the codes" },
  { name: "hidden", type: "string", default: "512,256", help: "encoder widths (decoder mirrors)" },
  { name: "beta", type: "number", default: 1e-4, min: 0, help: "weight of the KL term" },
  { name: "max-train-steps", type: "int", default: 1000, min: 1, help: "optimizer steps" },
  { name: "batch-size", type: "int", default: 128, min: 1, help: "batch size" },
  { name: "lr", type: "number", default: 2e-3, min: 0, help: "Adam learning rate" },
  { name: "train-limit", type: "int", min: 1, help: "use the first N training images" },
  { name: "seed", type: "int", default: 0, min: 0, help: "random seed" },
  { name: "output-dir", type: "string", default: "runs", help: "parent of the run directory" },
  { name: "exp-name", type: "string", default: "autoencoder-fmnist", help: "run directory name" },
  { name: "log-every", type: "int", default: 200, min: 1, help: "steps per metrics line" },
  { name: "checkpoint-every", type: "int", default: 1000, min: 1, help: "checkpoint period" },
  { name: "resume", type: "string", help: "a run directory or checkpoint to continue" },
] as const satisfies readonly FlagSpec[];

/** The run's configuration (config.json and every checkpoint). */
type AeRunConfig = AutoencoderTrainerConfig & Record<string, unknown> & {
  dataDir: string | null;
  trainLimit: number | null;
  maxTrainSteps: number;
  logEvery: number;
  checkpointEvery: number;
};

/** What `main` returns. */
export interface TrainAutoencoderResult {
  /** The run directory (its checkpoints/last.safetensors is the autoencoder). */
  runDir: string;
  /** Steps trained. */
  steps: number;
  /** Test-split reconstruction MSE per pixel (pixels in [−1, 1]). */
  testMse: number;
  /** The MSE of predicting the mean training image for every test image: the baseline. */
  meanImageMse: number;
  /** The reconstruction grid written. */
  grid: string;
  /** Training seconds of this session. */
  seconds: number;
}

/**
 * Run the task (null for --help).
 *
 * @example
 * ```ts
 * import { main } from "./train_autoencoder.ts";
 * console.log(await main(["--help"])); // prints the usage, then null
 * ```
 */
export async function main(argv: readonly string[]): Promise<TrainAutoencoderResult | null> {
  const given = new Set<string>();
  const f = parseTaskFlags(argv, TRAIN_AUTOENCODER_FLAGS, {
    task: "train:autoencoder",
    given,
    usage: "Train the MLP VAE whose codes train:cfm --latents and cluster --encoder use.",
  });
  if (!f) return null;
  const hidden = parseWidths("--hidden", f.hidden);
  const task = "train:autoencoder";
  // The images a run trains on come from its config, so a resumed run sees the same ones.
  const load = (c: { dataDir?: string | null; trainLimit?: number | null }) =>
    withPhase(task, "loading fashion-mnist", () =>
      Promise.all([
        loadFashionMnist({ dir: c.dataDir ?? undefined, limit: c.trainLimit ?? undefined }),
        loadFashionMnist({ dir: c.dataDir ?? undefined, split: "test" }),
      ]));
  const flags: AeRunConfig = {
    dataset: f.dataset,
    dataDir: f.dataDir ?? null,
    trainLimit: f.trainLimit ?? null,
    dataShape: [1, 28, 28],
    latentDim: f.latentDim,
    hidden,
    seed: f.seed,
    batchSize: f.batchSize,
    lr: f.lr,
    beta: f.beta,
    maxTrainSteps: f.maxTrainSteps,
    logEvery: f.logEvery,
    checkpointEvery: f.checkpointEvery,
    command: `deno task train:autoencoder ${argv.join(" ")}`.trim(),
  };
  // A fresh run reads its data before creating the run directory: a missing dataset leaves
  // nothing behind.
  const fresh = f.resume ? null : await load(flags);
  const { run, config, resume } = await openTrainingRun({
    task,
    config: flags,
    resume: f.resume ?? null,
    given,
    schedule: ["maxTrainSteps", "logEvery", "checkpointEvery"],
    outputDir: f.outputDir,
    expName: f.expName,
  });
  const [train, test] = fresh ?? await load(config);
  config.trainImages = train.n;
  const trainer = autoencoderTrainer(config, train);
  const steps = config.maxTrainSteps;
  const t0 = performance.now();
  try {
    // The trainer adds the codes' normalisation to `config` after the last step, so the
    // final checkpoint carries it; config.json gets it below.
    await fit(trainer, {
      run,
      maxSteps: steps,
      logEvery: Math.min(config.logEvery, steps),
      checkpointEvery: config.checkpointEvery,
      generator: new Generator(config.seed),
      resume,
      config,
      label: task,
      signal: taskSignal(),
    });
    const seconds = (performance.now() - t0) / 1000;
    await run.writeFile("config.json", configFileText(config));
    const model = trainer.model;
    const testMse = await reconstructionMse(model, test.images);
    // The baseline: every test image predicted by the mean training image.
    const px = model.inputDim, avg = new Float64Array(px);
    train.images.forEach((v, i) => avg[i % px]! += v / train.n);
    const meanImageMse = test.images.reduce((s, v, i) => s + (v - avg[i % px]!) ** 2, 0) /
      test.images.length;
    // Ten test images (one per class) above their reconstructions.
    const pick = Array.from({ length: 10 }, (_, k) => test.labels.indexOf(k));
    const orig = new Float32Array(
      pick.flatMap((i) => [...test.images.subarray(i * px, (i + 1) * px)]),
    );
    const both = new Float32Array(2 * orig.length);
    both.set(orig);
    both.set(await decodeCodes(model, await encodeImages(model, orig)), orig.length);
    const [ch, h, w] = train.shape;
    const g = imageGrid(both, { n: 20, channels: ch, height: h, width: w, nrow: 10 });
    const grid = await run.writeFile(
      "samples/reconstructions.png",
      await encodePng(g.width, g.height, g.rgba),
    );
    await run.writeFile(
      "samples/reconstructions.svg",
      await labelledGridSvg(both, train.shape, {
        cols: 10,
        rowLabels: ["test image", "reconstruction"],
        title: `train:autoencoder: test MSE ${testMse.toFixed(4)} (mean image ${
          meanImageMse.toFixed(4)
        })`,
      }),
    );
    const result = { runDir: run.dir, steps, testMse, meanImageMse, grid, seconds };
    await run.writeFile("eval.json", JSON.stringify({ ...result, testImages: test.n }, null, 2));
    console.log(
      `train:autoencoder: test reconstruction MSE ${testMse.toFixed(5)} per pixel (${test.n} ` +
        `images, pixels in [-1, 1]; predicting the mean image: ${meanImageMse.toFixed(5)}) ` +
        `after ${steps} steps, ${seconds.toFixed(0)} s of training`,
    );
    console.log(`train:autoencoder: wrote ${run.dir}/checkpoints/last.safetensors and ${grid}`);
    return result;
  } finally {
    trainer.model.dispose();
    trainer.optimizer.dispose();
  }
}

if (import.meta.main) await runTask("train:autoencoder", main);
