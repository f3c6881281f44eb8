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
 *
 * Image data (`--data-dir fashion-mnist`, or an `.npz` whose `x` is [N, H, W] or [N, C, H, W])
 * get a sample grid per class instead of the scatter: `samples/samples-step-N.png` (raw) and
 * `.svg` (upscaled, class names on the rows).
 *   deno task train:stablevm --resume runs/train-stablevm-20260101-120000
 * @module
 */
import {
  checkStableVmModel,
  embeddedRing,
  encodePng,
  fisherDivergence,
  fit,
  Generator,
  integrate,
  type LabelledSet,
  loadLabelledNpz,
  loadRepaEncoder,
  openTrainingRun,
  type SampleContext,
  stableVmField,
  type StableVmNet,
  stableVmTrainer,
  tensor,
  withPhase,
} from "../mod.ts";
import { imageGrid, labelledGridSvg, scatterPanels } from "../viz/mod.ts";
import { runTask, taskSignal } from "../cli/mod.ts";
import {
  fashionRows,
  imageShape,
  parseTrainFlags,
  STABLEVM_SCHEDULE,
  type TrainStableVmConfig,
  warnIgnoredFlags,
} from "./_stablevm.ts";

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
}

/** Samples and the Fisher divergence with the EMA weights (dropout off). */
async function finalFigures(
  ctx: SampleContext<StableVmNet>,
  c: TrainStableVmConfig,
  data: LabelledSet,
): Promise<{ plot: string; fisher: number | null }> {
  const C = data.numClasses, d = data.dim, model = ctx.model;
  const img = imageShape(data);
  // Images: 8 samples of each of (up to) 10 classes, one class per row; else a scatter.
  const rows = Math.min(C, 10), per = 8, nS = img ? rows * per : 1024;
  const labels = Float32Array.from({ length: nS }, (_, i) => img ? Math.floor(i / per) : i % C);
  const y = tensor(labels);
  const x0 = new Generator(c.seed + 4242).normal([nS, d]);
  const res = await integrate(stableVmField(model, img ?? undefined), x0, {
    method: "midpoint",
    steps: c.sampleSteps,
    cond: y,
  });
  const xs = await res.x.data();
  [res.x, x0, y].forEach((t) => t.dispose());
  const step6 = String(ctx.step).padStart(6, "0");
  if (img) {
    const grid = imageGrid(xs, {
      n: nS,
      channels: img[0],
      height: img[1],
      width: img[2],
      nrow: per,
    });
    const names = data.classNames ?? Array.from({ length: C }, (_, k) => `class ${k}`);
    await ctx.run.writeFile(
      `samples/samples-step-${step6}.svg`,
      await labelledGridSvg(xs, img, {
        cols: per,
        rowLabels: names.slice(0, rows),
        title: `Samples at step ${ctx.step} (${c.lossType}, EMA)`,
      }),
    );
    const png = await encodePng(grid.width, grid.height, grid.rgba);
    return {
      plot: await ctx.run.writeFile(`samples/samples-step-${step6}.png`, png),
      fisher: null,
    };
  }
  const two = (a: Float32Array) =>
    d === 2
      ? a
      : Float32Array.from({ length: (a.length / d) * 2 }, (_, i) =>
        a[Math.floor(i / 2) * d + (i % 2)]!);
  const dataIdx = Array.from({ length: nS }, (_, i) => Math.floor((i * data.n) / nS));
  const dataPts = new Float32Array(nS * d);
  dataIdx.forEach((j, i) => dataPts.set(data.x.subarray(j * d, (j + 1) * d), i * d));
  const png = await scatterPanels([
    { points: two(dataPts), labels: dataIdx.map((j) => data.labels[j]!), title: "data" },
    { points: two(xs), labels, title: `samples (${c.lossType}, step ${ctx.step})` },
  ]);
  const plot = await ctx.run.writeFile(`samples/samples-step-${step6}.png`, png);
  if (!data.gmm) return { plot, fisher: null };
  const fd = await fisherDivergence(stableVmField(model), data.gmm, {
    generator: new Generator(c.seed + 99),
    n: c.fisherSamples,
    conditional: true,
  });
  const fisher = fd.reduce((a, p) => a + p.value, 0) / fd.length;
  await ctx.log({
    "eval/fisher_divergence": fisher,
    ...Object.fromEntries(fd.map((p) => [`eval/fisher_t${p.t}`, p.value])),
  });
  return { plot, fisher };
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
  const load = (c: TrainStableVmConfig) =>
    c.dataDir
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
  const data = fresh ?? await load(c);
  const repa = enc || await encoder(c, data) || undefined;
  const trainer = stableVmTrainer(c, data, repa);
  let out = { plot: "", fisher: null as number | null };
  trainer.sample = async (ctx) => void (out = await finalFigures(ctx, c, data));
  try {
    const r = await fit(trainer, {
      run,
      maxSteps: c.maxTrainSteps,
      logEvery: c.logEvery,
      checkpointEvery: c.checkpointEvery,
      gradClip: c.maxGradNorm,
      generator: new Generator(c.seed),
      resume,
      config: c,
      label: "train:stablevm",
      signal: taskSignal(),
    });
    console.log(`checkpoint:   ${r.checkpoint}`);
    console.log(`metrics:      ${run.metricsPath}`);
    console.log(`sample plot:  ${out.plot}`);
    console.log(
      out.fisher === null
        ? "fisher divergence: n/a (no exact field for --data-dir data)"
        : `fisher divergence (EMA model vs exact class-conditional velocity, t = 0.5…0.8): ${
          out.fisher.toFixed(4)
        }`,
    );
    return {
      runDir: run.dir,
      checkpoint: r.checkpoint ?? run.checkpoints.lastPath,
      metrics: run.metricsPath,
      samplePlot: out.plot,
      steps: r.step,
      finalLoss: r.loss,
      fisher: out.fisher,
    };
  } finally {
    trainer.model.dispose();
    trainer.optimizer.dispose();
    trainer.ema?.dispose();
    repa?.model.dispose();
  }
}

if (import.meta.main) await runTask("train:stablevm", main);
