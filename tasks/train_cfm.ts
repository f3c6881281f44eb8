/**
 * @file `deno task train:cfm` — conditional flow matching (I-CFM or Lipman's path) with an
 * optional minibatch OT coupling (OT-CFM, seed 003), on the 2-D toys or Fashion-MNIST
 * (class-conditional DiT with label dropout for classifier-free guidance). Writes a run
 * directory: config.json, metrics.jsonl (`training/loss_flow`, `training/grad_norm`,
 * `training/lr`, and `training/ot_marginal_error` with OT), checkpoints (model, EMA,
 * optimizer, step, RNG, config) and `samples/step-N.png`. The loop is `lib/train`'s `fit`.
 *
 *   deno task train:cfm --dataset moons
 *   deno task train:cfm --dataset 8gaussians --ot            # seed 003's Sinkhorn + argmax
 *   deno task train:cfm --dataset checkerboard --ot exact --max-train-steps 5000
 *   deno task train:cfm --dataset fashion-mnist --model dit-tiny --cfg-dropout 0.1
 *   deno task train:cfm --dataset fashion-mnist --use-proj-loss --proj-encoder runs/clf  # REPA
 *   deno task train:cfm --resume runs/train-cfm-20260101-120000
 *
 * Convention (seeds 001/003): t = 0 noise, t = 1 data, x_t = (1 − t)·x0 + t·x1, target x1 − x0.
 * @module
 */
import {
  type CfmData,
  type CfmNet,
  cfmTrainer,
  checkCfmModelFits,
  encodePng,
  fit,
  Generator,
  type LoadedAutoencoder,
  loadRepaEncoder,
  openTrainingRun,
  optim,
  sampleCfmModel,
  type SampleContext,
  samplesAsData,
  withLatents,
} from "../mod.ts";
import { loadData } from "./_data.ts";
import { imageGrid, labelledGridSvg, scatterPanels } from "../viz/mod.ts";
import { runTask, taskSignal } from "../cli/mod.ts";
import { CFM_SCHEDULE, parseTrainCfmFlags, type TrainCfmConfig } from "./_cfm.ts";

export { OT_METHODS, parseTrainCfmFlags, TRAIN_CFM_FLAGS, type TrainCfmConfig } from "./_cfm.ts";

/** What `main` returns. */
export interface TrainCfmResult {
  /** The run directory. */
  runDir: string;
  /** The last checkpoint written. */
  checkpoint: string;
  /** metrics.jsonl. */
  metrics: string;
  /** The final sample image. */
  samplePlot: string;
  /** Steps done. */
  steps: number;
  /** Mean loss over the last logging window. */
  finalLoss: number;
}

/** Sample figure with the EMA weights: a scatter against the data, or a class grid. */
async function writeSamples(
  ctx: SampleContext<CfmNet>,
  c: TrainCfmConfig,
  data: CfmData,
): Promise<string> {
  const rel = `samples/step-${String(ctx.step).padStart(6, "0")}.png`;
  const opts = { sampler: "midpoint" as const, steps: c.sampleSteps, seed: c.seed + 4242 };
  if (c.dataset === "fashion-mnist") {
    const per = 8, C = c.numClasses;
    const labels = Float32Array.from({ length: C * per }, (_, i) => Math.floor(i / per));
    const z = await sampleCfmModel(ctx.model, c.dataShape, {
      ...opts,
      n: labels.length,
      labels,
      batch: 40,
    });
    // A latent run's codes are decoded; a flat-pixel model's [784] samples are 1×28×28 images.
    const g = await samplesAsData(c, z.x);
    const [channels, height, width] = (g.shape.length === 3 ? g.shape : [1, 28, 28]) as [
      number,
      number,
      number,
    ];
    const grid = imageGrid(g.x, { n: labels.length, channels, height, width, nrow: per });
    // The figure to read: upscaled, one class per row, named; the PNG is the raw grid.
    const names = data.classNames ?? Array.from({ length: C }, (_, k) => `class ${k}`);
    await ctx.run.writeFile(
      rel.replace(/\.png$/, ".svg"),
      await labelledGridSvg(g.x, [channels, height, width], {
        cols: per,
        rowLabels: names.slice(0, C),
        title: `Samples at step ${ctx.step} (EMA, ${c.sampleSteps} midpoint steps)`,
      }),
    );
    return await ctx.run.writeFile(rel, await encodePng(grid.width, grid.height, grid.rgba));
  }
  const n = 1000;
  const g = await sampleCfmModel(ctx.model, c.dataShape, { ...opts, n });
  const ref = await data.reference(n);
  const png = await scatterPanels([
    { points: ref.x, title: `data (${c.dataset})` },
    { points: g.x, title: `samples (ot ${c.ot}, step ${ctx.step})` },
  ]);
  return await ctx.run.writeFile(rel, png);
}

/**
 * Run the task with command-line arguments; returns the run's paths (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./train_cfm.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<TrainCfmResult | null> {
  const given = new Set<string>();
  const parsed = parseTrainCfmFlags(argv, given);
  if (!parsed) return null;
  // --latents: the autoencoder is read and checked (and the data encoded) before any write.
  const fresh = parsed.resume ? null : await withLatents(parsed);
  const flags = fresh?.config ?? parsed;
  // A fresh run checks its sizes and reads its data before creating the run directory, so
  // a model too large for the device or a missing dataset leaves nothing behind.
  if (!flags.resume) checkCfmModelFits(flags, flags.batchSize);
  // REPA's encoder is read and checked against the data and the DiT before anything is written.
  const encoder = (c: TrainCfmConfig) =>
    c.useProjLoss ? loadRepaEncoder(c.projEncoder, { ...c, featureDim: c.projFeatureDim }) : null;
  const enc = flags.resume ? null : await encoder(flags);
  const flat = (c: TrainCfmConfig) => ({ flat: c.model === "velocity-mlp" });
  // Pixels, or (--latents) the autoencoder's codes: computed once, then the encoder goes.
  const dataOf = async (c: TrainCfmConfig, ae: LoadedAutoencoder | null) => {
    try {
      return await loadData("train:cfm", c.dataset, c.seed, { ...flat(c), autoencoder: ae });
    } finally {
      ae?.model.dispose();
    }
  };
  const freshData = fresh ? await dataOf(flags, fresh.ae) : null;
  const { run, config: c, resume } = await openTrainingRun({
    task: "train:cfm",
    config: enc ? { ...flags, projFeatureDim: enc.model.featureDim } : flags,
    resume: flags.resume,
    given,
    schedule: CFM_SCHEDULE,
    outputDir: flags.outputDir,
    expName: flags.expName,
  });
  const data = freshData ?? await dataOf(c, (await withLatents(c)).ae);
  const generator = new Generator(c.seed);
  const repa = enc ?? await encoder(c) ?? undefined;
  const trainer = cfmTrainer(c, data, generator, repa);
  let samplePlot = "";
  trainer.sample = async (ctx) => void (samplePlot = await writeSamples(ctx, c, data));
  try {
    const r = await fit(trainer, {
      run,
      maxSteps: c.maxTrainSteps,
      logEvery: c.logEvery,
      checkpointEvery: c.checkpointEvery,
      sampleEvery: c.sampleEvery,
      gradClip: c.gradClip,
      // Old runs' configs have no warmupSteps.
      lrSchedule: (c.warmupSteps ?? 0) > 0 ? optim.linearWarmup(c.warmupSteps) : undefined,
      generator,
      resume,
      config: c,
      label: "train:cfm",
      signal: taskSignal(),
    });
    console.log(`run:          ${run.dir}`);
    console.log(`checkpoint:   ${r.checkpoint}`);
    console.log(`metrics:      ${run.metricsPath}`);
    console.log(`samples:      ${samplePlot}`);
    return {
      runDir: run.dir,
      checkpoint: r.checkpoint ?? run.checkpoints.lastPath,
      metrics: run.metricsPath,
      samplePlot,
      steps: r.step,
      finalLoss: r.loss,
    };
  } finally {
    trainer.model.dispose();
    trainer.optimizer.dispose();
    trainer.ema?.dispose();
    repa?.model.dispose();
  }
}

if (import.meta.main) await runTask("train:cfm", main);
