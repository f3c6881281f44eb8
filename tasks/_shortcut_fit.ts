/**
 * @file Running a shortcut task: the run directory (fresh or `--resume`), `shortcutTrainer`
 * handed to the one loop (`fit`), and the samples and few-step metrics written with the EMA
 * weights (`samples/step-N.png` with N = 1, 2, 4, 8 step samples; on toys `eval/w2_Nstep`
 * and `eval/straightness` in metrics.jsonl).
 * @module
 */
import {
  type CfmData,
  type CfmNet,
  checkCfmModelFits,
  encodePng,
  evaluateFewStep,
  type FewStepEval,
  fit,
  type FitResult,
  Generator,
  openTrainingRun,
  sampleCfmModel,
  type SampleContext,
  type ShortcutTerms,
  shortcutTrainer,
} from "../mod.ts";
import { loadData } from "./_data.ts";
import { imageGrid, labelledGridSvg, scatterPanels } from "../viz/mod.ts";
import { taskSignal } from "../cli/mod.ts";
import type { ShortcutTaskConfig } from "./_shortcut.ts";

const STEPS = [1, 2, 4, 8];

/** Samples at N = 1, 2, 4, 8 steps (a scatter per N, or one image row per N). */
async function writeSamples(ctx: SampleContext<CfmNet>, c: ShortcutTaskConfig, data: CfmData) {
  const images = c.dataset === "fashion-mnist";
  const n = images ? 10 : 1000;
  const labels = images ? Float32Array.from({ length: n }, (_, i) => i % 10) : undefined;
  const outs: Float32Array[] = [];
  for (const N of STEPS) {
    const g = await sampleCfmModel(ctx.model, c.dataShape, {
      n,
      sampler: "euler",
      steps: N,
      seed: c.seed + 4242,
      labels,
      cfgScale: images ? c.cfgScale : 1,
      denoiseTimesteps: c.denoiseTimesteps,
    });
    outs.push(g.x);
  }
  const rel = `samples/step-${String(ctx.step).padStart(6, "0")}.png`;
  if (images) {
    const all = new Float32Array(outs.reduce((a, x) => a + x.length, 0));
    outs.forEach((x, i) => all.set(x, i * x.length));
    const grid = imageGrid(all, { n: 4 * n, channels: 1, height: 28, width: 28, nrow: n });
    // The figure to read: one class per row (named), one column per step count, upscaled.
    const byClass = new Float32Array(all.length), px = 28 * 28;
    for (let k = 0; k < n; k++) {
      STEPS.forEach((_, j) =>
        byClass.set(outs[j]!.subarray(k * px, (k + 1) * px), (k * STEPS.length + j) * px)
      );
    }
    await ctx.run.writeFile(
      rel.replace(/\.png$/, ".svg"),
      await labelledGridSvg(byClass, [1, 28, 28], {
        cols: STEPS.length,
        rowLabels: data.classNames ?? Array.from({ length: n }, (_, k) => `class ${k}`),
        colLabels: STEPS.map((N) => `${N} step${N > 1 ? "s" : ""}`),
        title: `${c.task}, step ${ctx.step} (EMA)`,
      }),
    );
    return await ctx.run.writeFile(rel, await encodePng(grid.width, grid.height, grid.rgba));
  }
  const ref = await data.reference(n);
  const png = await scatterPanels([
    { points: ref.x, title: `data (${c.dataset})` },
    ...STEPS.map((N, i) => ({ points: outs[i]!, title: `${N} step${N > 1 ? "s" : ""}` })),
  ], { title: `${c.task}, step ${ctx.step} (EMA)` });
  return await ctx.run.writeFile(rel, png);
}

/** What {@linkcode trainShortcut} returns. */
export interface ShortcutRunResult {
  /** The run directory. */
  runDir: string;
  /** The loop's result. */
  fit: FitResult;
  /** Few-step evaluation after the last step (toys; null for Fashion-MNIST). */
  eval: FewStepEval | null;
}

/**
 * Open (or resume) the run, then train `shortcutTrainer(config, data, terms(config))` with
 * `fit`. `terms` sees the effective configuration (the stored one when resuming).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { COMMON_FLAGS, commonConfig, parseTaskFlags } from "./_shortcut.ts";
 * import { trainShortcut } from "./_shortcut_fit.ts";
 * const dir = await Deno.makeTempDir();
 * const p = parseTaskFlags(["--hidden=8", "--depth=1", "--batch-size=16", "--max-train-steps=2",
 *   "--eval-samples=8", `--output-dir=${dir}`], COMMON_FLAGS, "t", "")!;
 * const r = await trainShortcut(commonConfig("train:shortcut", p.f), p.given);
 * assert.equal(r.fit.step, 2);
 * assert.ok(r.eval!.w2[1]! > 0);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function trainShortcut(
  flags: ShortcutTaskConfig,
  given: ReadonlySet<string>,
  terms: (c: ShortcutTaskConfig) => ShortcutTerms | Promise<ShortcutTerms> = () => ({}),
): Promise<ShortcutRunResult> {
  // A fresh run checks its sizes and reads its data before creating the run directory.
  const flat = (c: ShortcutTaskConfig) => ({ flat: c.dataShape.length === 1 });
  if (!flags.resume) checkCfmModelFits(flags, flags.batchSize);
  const fresh = flags.resume
    ? null
    : await loadData(flags.task, flags.dataset, flags.seed, flat(flags));
  const { run, config: c, resume } = await openTrainingRun({
    task: flags.task,
    config: flags,
    resume: flags.resume,
    given,
    schedule: ["maxTrainSteps", "logEvery", "checkpointEvery", "sampleEvery"],
    outputDir: flags.outputDir,
    expName: flags.expName,
  });
  const data = fresh ?? await loadData(c.task, c.dataset, c.seed, flat(c));
  const trainer = shortcutTrainer(c, data, await terms(c));
  let evalOut: FewStepEval | null = null;
  trainer.sample = async (ctx) => {
    await writeSamples(ctx, c, data);
    if (c.dataset === "fashion-mnist") return;
    evalOut = await evaluateFewStep(ctx.model, c, { n: c.evalSamples, steps: STEPS });
    const rec: Record<string, number> = { "eval/straightness": evalOut.straightness };
    for (const N of STEPS) rec[`eval/w2_${N}step`] = evalOut.w2[N]!;
    await ctx.log(rec);
  };
  try {
    const r = await fit(trainer, {
      run,
      maxSteps: c.maxTrainSteps,
      logEvery: c.logEvery,
      checkpointEvery: c.checkpointEvery,
      sampleEvery: c.sampleEvery,
      gradClip: c.gradClip,
      generator: new Generator(c.seed),
      resume,
      config: c,
      label: c.task,
      signal: taskSignal(),
    });
    return { runDir: run.dir, fit: r, eval: evalOut };
  } finally {
    trainer.model.dispose();
    trainer.optimizer.dispose();
    trainer.ema?.dispose();
  }
}
