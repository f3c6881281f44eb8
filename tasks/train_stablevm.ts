/**
 * @file `deno task train:stablevm` — train a class-conditional velocity model with Stable
 * Velocity Matching (`--loss-type stablevm`) or plain CFM (`--loss-type si`), after SV's
 * train.py. With no flags it trains the AdaLN-Zero MLP on an embedded class-conditional
 * Gaussian mixture (the 8-mode 2-D ring: the components are the classes), writes a run
 * directory (config.json, metrics.jsonl, checkpoints with the memory bank as `state.bank.*`
 * tensors, a sample scatter plot) and prints the final Fisher divergence against the exact
 * class-conditional field. The loop is `lib/train`'s `fit`.
 *
 *   deno task train:stablevm
 *   deno task train:stablevm --loss-type si --max-train-steps 5000
 *   deno task train:stablevm --data-dir my.npz --bank-capacity-per-class 64
 *   deno task train:stablevm --data-dir fashion-mnist --max-train-steps 2000
 *   deno task train:stablevm --data-dir fashion-mnist --model dit-tiny --use-proj-loss \
 *     --proj-encoder runs/classifier-fmnist --proj-weight-schedule sigmoid   # VA-REPA
 *   deno task train:stablevm --latents runs/autoencoder-fmnist --hidden 256   # on codes
 *
 * Image data (`--data-dir fashion-mnist`, or an `.npz` whose `x` is [N, H, W] or [N, C, H, W])
 * get a sample grid per class instead of the scatter, guided by `--cfg-scale` (default 3):
 * `samples/samples-step-N.png` (raw) and `.svg` (upscaled, class names on the rows).
 * On Fashion-MNIST `--eval-samples` guided samples (default 2000; 0: off) are then scored with
 * `--classifier` (the shipped one by default): FD on its features against the test split, the
 * real-train-vs-test floor and class agreement (tasks/_stablevm_final.ts).
 *   deno task train:stablevm --resume runs/train-stablevm-20260101-120000
 * @module
 */
import {
  checkStableVmModel,
  embeddedRing,
  fit,
  Generator,
  type LabelledSet,
  type LoadedAutoencoder,
  loadLabelledNpz,
  loadRepaEncoder,
  openTrainingRun,
  optim,
  stableVmTrainer,
  withPhase,
} from "../mod.ts";
import { runTask, taskSignal } from "../cli/mod.ts";
import {
  fashionRows,
  imageShape,
  parseTrainFlags,
  STABLEVM_SCHEDULE,
  type TrainStableVmConfig,
  warnIgnoredFlags,
} from "./_stablevm.ts";
import { type FinalFigures, finalFigures, finalReport } from "./_stablevm_final.ts";
import { checkImageFlags, IMAGE_SCHEDULE, scoringClassifier } from "./_stablevm_images.ts";
import { latentRows } from "./_stablevm_latent.ts";

export {
  LOSS_TYPES,
  MODELS,
  parseTrainFlags,
  TRAIN_STABLEVM_FLAGS,
  type TrainStableVmConfig,
} from "./_stablevm.ts";

/** What `main` returns (paths and the final numbers). */
export interface TrainStableVmResult {
  runDir: string;
  checkpoint: string;
  metrics: string;
  samplePlot: string;
  steps: number;
  finalLoss: number;
  /** Mean Fisher divergence of the EMA model against the exact class-conditional field. */
  fisher: number | null;
  /** Fashion-MNIST: FD, its floor and class agreement of the guided EMA samples (else null). */
  eval: FinalFigures["scores"];
  /** Mean wall time of this session's training steps (ms; logging and checkpoints included). */
  stepMs: number;
}

/**
 * Run the task with command-line arguments; returns the run's paths and final numbers
 * (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./train_stablevm.ts";
 * assert.equal(await main(["--help"]), null); // a real run: main(["--max-train-steps", "200"])
 * ```
 */
export async function main(argv: readonly string[]): Promise<TrainStableVmResult | null> {
  const given = new Set<string>();
  const flags = parseTrainFlags(argv, given);
  if (!flags) return null;
  warnIgnoredFlags(given);
  // --latents: the autoencoder is kept for decoding the final samples; the config records it.
  let ae: LoadedAutoencoder | null = null;
  const load = (c: TrainStableVmConfig) =>
    c.latents
      ? withPhase("train:stablevm", `encoding fashion-mnist (--latents)`, async () => {
        const r = await latentRows(c.latents!, 10_000);
        [ae, c.latents] = [r.ae, r.spec];
        return r.data;
      })
      : c.dataDir
      ? withPhase(
        "train:stablevm",
        `loading ${c.dataDir}`,
        () => c.dataDir === "fashion-mnist" ? fashionRows(10_000) : loadLabelledNpz(c.dataDir!),
      )
      : Promise.resolve(embeddedRing(c.seed));
  // A fresh run reads its data before creating the run directory (nothing is left behind
  // when the data are bad); the class count is part of its config.
  const fresh = flags.resume ? null : await load(flags);
  if (fresh) checkStableVmModel(flags, fresh);
  if (fresh) checkImageFlags(flags, fresh, given);
  // REPA's encoder is read and checked against the images and the DiT before the run exists.
  const encoder = (c: TrainStableVmConfig, d: LabelledSet) =>
    c.useProjLoss
      ? loadRepaEncoder(c.projEncoder, {
        dataShape: imageShape(d) ?? [d.dim],
        depth: c.blocks,
        encoderDepth: c.encoderDepth,
        featureDim: c.projFeatureDim,
      })
      : null;
  const enc = fresh && await encoder(flags, fresh);
  const clf0 = fresh && await scoringClassifier(flags, fresh).catch((e) => {
    enc?.model.dispose();
    throw e;
  });
  const { run, config: c, resume } = await openTrainingRun({
    task: "train:stablevm",
    config: fresh
      ? {
        ...flags,
        dataset: flags.dataDir ?? "embedded:ring8-2d",
        numClasses: fresh.numClasses,
        ...(enc ? { projFeatureDim: enc.model.featureDim } : {}),
      }
      : flags,
    resume: flags.resume,
    given,
    schedule: STABLEVM_SCHEDULE,
    outputDir: flags.outputDir,
    expName: flags.expName,
  });
  // A run from before the image flags existed takes their values from this command line.
  for (const k of IMAGE_SCHEDULE) if (c[k] === undefined) Object.assign(c, { [k]: flags[k] });
  const data = fresh ?? await load(c);
  if (!fresh) checkImageFlags(c, data, given);
  const repa = enc || await encoder(c, data) || undefined;
  const clf = fresh ? clf0 : await scoringClassifier(c, data).catch((e) => {
    repa?.model.dispose();
    throw e;
  });
  const trainer = stableVmTrainer(c, data, repa);
  let out: FinalFigures = { plot: "", fisher: null, scores: null };
  let t0 = 0, s0 = 0, tEnd = 0;
  const setup = trainer.setup;
  trainer.setup = async (ctx) => {
    await setup?.(ctx);
    [t0, s0] = [performance.now(), ctx.step];
  };
  trainer.sample = async (ctx) => {
    tEnd = performance.now();
    out = await finalFigures(ctx, c, data, clf);
  };
  try {
    const r = await fit(trainer, {
      run,
      maxSteps: c.maxTrainSteps,
      logEvery: c.logEvery,
      checkpointEvery: c.checkpointEvery,
      gradClip: c.maxGradNorm,
      lrSchedule: (c.warmupSteps ?? 0) > 0 ? optim.linearWarmup(c.warmupSteps!) : undefined,
      generator: new Generator(c.seed),
      resume,
      config: c,
      label: "train:stablevm",
      signal: taskSignal(),
    });
    const stepMs = r.step > s0 ? ((tEnd || performance.now()) - t0) / (r.step - s0) : NaN;
    console.log(`checkpoint:   ${r.checkpoint}`);
    console.log(`metrics:      ${run.metricsPath}`);
    console.log(`sample plot:  ${out.plot}`);
    console.log(`step time:    ${stepMs.toFixed(1)} ms (this session; logging, checkpoints incl.)`);
    console.log(finalReport(out));
    return {
      runDir: run.dir,
      checkpoint: r.checkpoint ?? run.checkpoints.lastPath,
      metrics: run.metricsPath,
      samplePlot: out.plot,
      steps: r.step,
      finalLoss: r.loss,
      fisher: out.fisher,
      eval: out.scores,
      stepMs,
    };
  } finally {
    trainer.model.dispose();
    trainer.optimizer.dispose();
    trainer.ema?.dispose();
    repa?.model.dispose();
    clf?.model.dispose();
    (ae as LoadedAutoencoder | null)?.model.dispose();
  }
}

if (import.meta.main) await runTask("train:stablevm", main);
