/**
 * @file `deno task gmm` — SV's toy experiments (gmm_exp.py) on a Gaussian mixture with an
 * exact field: train the AdaLN-Zero MLP on the CFM, STF or StableVM target, track the
 * Fisher divergence of the EMA model against the EXACT velocity/score on held-out samples,
 * and plot the target-variance curves (median and 15–85 % band of ‖target − exact‖²/√d).
 *
 * Reference setup: 100 modes in 10-D (means U(−1,1), variances U(.01,.1), weights
 * U(.1,1)), batch 256, reference batch 2048, Adam lr 1e-4, EMA 0.999, Fisher divergence at
 * SV's t ∈ {0.2, …, 0.5} = our t ∈ {0.5, …, 0.8}. Defaults are shortened so a run takes a
 * few minutes on a CPU adapter: 1000 steps at lr 1e-3 (1e-4 barely moves in 1000 steps);
 * SV's run is `--max-train-steps 20000 --lr 1e-4 --eval-every 500 --fisher-samples 10000
 * --variance-num-t 50 --variance-samples 10000`.
 *
 * As gmm_exp.py: StableVM draws a fresh `--ref-batch-size` reference batch each step,
 * regresses rows of it, and uses the stable target at every t (`--reference bank` and
 * `--split-t` give SV's image recipe instead); `--vector-field score` regresses SV's
 * −E[x0 | x_t] (`--score-target exact` for ∇log p). Differences, on purpose: `--exp stf`
 * does not read the unassigned `x_batch`, `stable_vm_efficient` runs (and equals stable_vm
 * within 1e-5), small weights are not zeroed without renormalising, every objective gets the
 * same gradient clipping (SV clips CFM only), the Fisher divergence is against the exact
 * mixture field (SV: an STF estimate over 100k samples).
 *
 * Metrics: `training/loss_flow`, `training/grad_norm`, `training/lr` every 50 steps (the
 * loop is `lib/train`'s `fit`), and `eval/fisher_divergence` (mean over t) with
 * `eval/fisher_t<t>` every `--eval-every` steps (score runs also `eval/fisher_noise` and
 * `eval/fisher_score`: both parameterisations).
 *
 *   deno task gmm --exp stable_vm --vector-field velocity
 *   deno task gmm --only-plot
 *   deno task gmm --exp cfm --enable-visualization
 * @module
 */
import {
  type FieldKind,
  fisherDivergence,
  fit,
  GaussianMixture,
  Generator,
  gmmFieldKind,
  gmmToyTrainer,
  openTrainingRun,
  type Run,
  sub,
  type Tensor,
  varianceCurves,
  type VarianceCurvesForDim,
  type VarianceTarget,
} from "../mod.ts";
import { parseTaskFlags, runTask, taskSignal } from "../cli/mod.ts";
import { GMM_FLAGS, GMM_SCHEDULE } from "./_gmm_flags.ts";
import {
  fieldGif,
  type FisherAtStep,
  fisherFromMetrics,
  writeFisherFigures,
  writeVarianceFigures,
} from "./_gmm_plots.ts";

export { GMM_EXPERIMENTS } from "../mod.ts";
export { GMM_FLAGS } from "./_gmm_flags.ts";

const ABOUT = "SV's GMM toy experiments: CFM vs STF vs StableVM targets, trained and compared " +
  "with the exact mixture field (Fisher divergence), plus target-variance curves.";

/** What `main` returns. */
export interface GmmResult {
  runDir: string;
  /** Fisher divergence per evaluation step and time (empty with --only-plot). */
  fisher: FisherAtStep[];
  /** Variance curves (empty with --no-plot-variance). */
  variance: VarianceCurvesForDim[];
  /** Files written (plots, JSON, GIF). */
  files: string[];
}

/**
 * Run the task; returns the run directory, the numbers and the files written (or `null`
 * for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./gmm.ts";
 * assert.equal(await main(["--help"]), null); // a run: main(["--exp", "stable_vm"])
 * ```
 */
export async function main(argv: readonly string[]): Promise<GmmResult | null> {
  const given = new Set<string>();
  const flags = parseTaskFlags(argv, GMM_FLAGS, {
    task: "gmm",
    given,
    usage: ABOUT,
  });
  if (!flags) return null;
  let f = flags;
  if (f.useWandb) console.warn("gmm: --use-wandb has no effect (metrics go to metrics.jsonl)");
  if (f.imagenetDataPath) {
    throw new RangeError(
      "--imagenet-data-path: variance curves on image latents need the image stack; only the GMM curves are available",
    );
  }
  const vdims = f.varianceDims.split(",").map((s) => {
    const v = Number(s.trim());
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(
        `Expected --variance-dims to be comma-separated integers >= 1 but found "${f.varianceDims}"`,
      );
    }
    return v;
  });
  const kind = gmmFieldKind(f);
  const opened = await openTrainingRun({
    task: "gmm",
    config: { ...flags, _: undefined },
    resume: flags.resume ?? null,
    given,
    schedule: GMM_SCHEDULE,
    outputDir: flags.outputDir,
    expName: flags.expName,
  });
  const { run, resume } = opened;
  f = { ...opened.config, _: [] };
  const files: string[] = [];
  const result: GmmResult = { runDir: run.dir, fisher: [], variance: [], files };

  // A resumed run plotted its curves before its first checkpoint.
  if (!resume && (f.plotVariance || f.onlyPlot)) {
    // Ours (median of ‖target − exact field‖²) and SV's plotted curve ("cfm-stf": mean of
    // ‖CFM target − STF target‖² over a 10k reference set that includes the points).
    const targets: VarianceTarget[] = f.exp === "stf"
      ? ["cfm", "stf", "cfm-stf"]
      : ["cfm", "stablevm", "cfm-stf"];
    console.error(`gmm: variance curves (dims ${vdims.join(", ")}, ${f.varianceNumT} t values)…`);
    result.variance = await varianceCurves({
      dims: vdims,
      numT: f.varianceNumT,
      n: f.varianceSamples,
      targets,
      bankSize: f.bankSize,
      refSize: f.refBatchSize,
      numModes: f.numModes,
      seed: f.seed,
      kind,
    });
    files.push(...await writeVarianceFigures(run, result.variance, targets, f.vectorField));
  }
  if (f.onlyPlot) return finish(run, result);

  const viz = f.enableVisualization;
  const gmm = viz
    ? GaussianMixture.ring({ numModes: 8 })
    : GaussianMixture.reference({ dim: f.dim, numModes: f.numModes, seed: f.seed });
  if (viz) {
    console.error(
      "gmm: --enable-visualization trains on the 2-D 8-mode ring so the field can be drawn",
    );
  }
  const trainer = gmmToyTrainer(f, gmm);
  const model = trainer.model;
  const field = (x: Tensor, t: Tensor) => model.forward(x, t);
  // Evaluation with the EMA weights (fit swaps them in) every --eval-every steps and at the end.
  // A score model is scored in both parameterisations: eval/fisher_noise (SV's number,
  // ‖f − (−E[x0|x_t])‖²) and eval/fisher_score (against ∇log p); (1−t) converts between them.
  const kinds: FieldKind[] = kind === "velocity" ? ["velocity"] : ["noise", "score"];
  const as = (k: FieldKind) => (x: Tensor, t: Tensor) => {
    const omt = sub(1, t).reshape([-1, 1]);
    return k === kind ? field(x, t) : k === "score" ? field(x, t).div(omt) : field(x, t).mul(omt);
  };
  trainer.sample = async (ctx) => {
    const rec: Record<string, number> = {};
    for (const k of kinds) {
      const values = await fisherDivergence(as(k), gmm, {
        generator: new Generator(f.seed + 777),
        n: f.fisherSamples,
        kind: k,
      });
      const avg = values.reduce((a, p) => a + p.value, 0) / values.length;
      if (k === kind) {
        rec["eval/fisher_divergence"] = avg;
        for (const p of values) rec[`eval/fisher_t${p.t}`] = p.value;
      }
      if (k !== "velocity") rec[`eval/fisher_${k}`] = avg;
    }
    await ctx.log(rec);
  };
  try {
    await fit(trainer, {
      run,
      maxSteps: f.maxTrainSteps,
      logEvery: f.logEvery,
      checkpointEvery: f.checkpointEvery,
      sampleEvery: f.evalEvery,
      gradClip: f.maxGradNorm,
      generator: new Generator(f.seed + 1),
      resume,
      config: f,
      label: `gmm ${f.exp}_${f.vectorField}`,
      signal: taskSignal(),
    });
    // From metrics.jsonl, so a resumed run's figures include the evaluations before it.
    result.fisher = fisherFromMetrics(await run.readMetrics());
    files.push(
      ...await writeFisherFigures(run, result.fisher, { exp: f.exp, vectorField: f.vectorField }),
    );
    if (viz) {
      model.eval();
      trainer.ema!.swapInto(model);
      const gif = await fieldGif(field, gmm, kind);
      files.push(await run.writeFile(`plots/field_${f.exp}_${f.vectorField}.gif`, gif));
    }
  } finally {
    model.dispose();
    trainer.optimizer.dispose();
    trainer.ema!.dispose();
  }
  const last = result.fisher[result.fisher.length - 1];
  if (last) {
    console.log(
      `fisher divergence (${f.exp}, ${kind}, EMA model vs exact field) at step ${last.step}: ` +
        last.values.map((p) => `t=${p.t}: ${p.value.toFixed(4)}`).join(", "),
    );
  }
  return finish(run, result);
}

function finish(run: Run, result: GmmResult): GmmResult {
  console.log(`run:   ${run.dir}`);
  for (const p of result.files) console.log(`wrote: ${p}`);
  return result;
}

if (import.meta.main) await runTask("gmm", main);
