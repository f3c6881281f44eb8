/**
 * @file `deno task train:flowmap` — flow maps by self-distillation (seed 004, Boffi et al.
 * 2025) on the shared loop (`lib/train` `fit`): the diagonal (tangent) loss on the first rows
 * of each batch, LSD, PSD (midpoint or uniform) or ESD on the rest, teachers with the current
 * parameters and no gradient. Defaults are seed 004's checkerboard setup: FlowMapMLP 4×256
 * SiLU on (x, s, t), AdamW lr 2e-4 (weight decay 1e-4), 1536 diagonal + 512 off-diagonal rows,
 * 20k steps. After the last step it writes the KL table at N = 1, 2, 4, 8, 16 (60 bins on
 * [−2.5, 2.5]², `--eval-samples` samples) to metrics.jsonl (`eval/kl_n<N>`) and eval_kl.json.
 *
 *   deno task train:flowmap --method lsd
 *   deno task train:flowmap --method psd --psd-mode uniform --seed 1
 *   deno task train:flowmap --resume runs/train-flowmap-20260101-120000 --max-train-steps 30000
 * @module
 */
import {
  fit,
  FLOWMAP_METHODS,
  FLOWMAP_TASK,
  flowMapTrainer,
  openTrainingRun,
  PSD_MODES,
  TOY_NAMES,
} from "../mod.ts";
import { type FlagSpec, parseTaskFlags, runTask, taskSignal } from "../cli/mod.ts";
import { flowMapKLReport } from "./_flowmap.ts";

const ACTS = ["silu", "gelu", "relu", "tanh"] as const;

/**
 * The flags (kebab-case; snake_case spellings such as `--psd_mode` work too).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TRAIN_FLOWMAP_FLAGS } from "./train_flowmap.ts";
 * assert.equal(TRAIN_FLOWMAP_FLAGS.find((f) => f.name === "lr")?.default, 2e-4);
 * ```
 */
export const TRAIN_FLOWMAP_FLAGS = [
  { name: "method", type: "choice", choices: FLOWMAP_METHODS, default: "lsd", help: "objective" },
  { name: "psd-mode", type: "choice", choices: PSD_MODES, default: "midpoint", help: "PSD split" },
  { name: "dataset", type: "choice", choices: TOY_NAMES, default: "checkerboard", help: "data" },
  { name: "hidden", type: "int", default: 256, min: 1, help: "MLP width" },
  { name: "depth", type: "int", default: 4, min: 1, help: "hidden layers" },
  { name: "activation", type: "choice", choices: ACTS, default: "silu", help: "hidden activation" },
  { name: "batch-size", type: "int", default: 2048, min: 1, help: "rows per step (all kinds)" },
  { name: "diagonal-fraction", type: "number", default: 0.75, min: 0, max: 1, help: "diag." },
  { name: "diagonal-rows", type: "int", min: 0, help: "diagonal rows (overrides the fraction)" },
  { name: "off-diagonal-weight", type: "number", default: 1, min: 0, help: "LSD/PSD/ESD weight" },
  { name: "lr", type: "number", default: 2e-4, min: 0, help: "AdamW learning rate" },
  { name: "weight-decay", type: "number", default: 1e-4, min: 0, help: "AdamW weight decay" },
  { name: "ema-decay", type: "number", default: 0, min: 0, max: 1, help: "EMA decay (0: none)" },
  { name: "grad-clip", type: "number", default: 0, min: 0, help: "gradient-norm clip (0: off)" },
  { name: "max-train-steps", type: "int", default: 20000, min: 1, help: "optimizer steps" },
  { name: "log-every", type: "int", default: 100, min: 1, help: "steps per metrics line" },
  { name: "checkpoint-every", type: "int", default: 1000, min: 1, help: "steps per checkpoint" },
  { name: "sample-every", type: "int", default: 0, min: 0, help: "steps per KL plot (0: end)" },
  { name: "eval-samples", type: "int", default: 100000, min: 0, help: "final KL samples" },
  { name: "seed", type: "int", default: 0, min: 0, help: "seed of data, noise, times and init" },
  { name: "output-dir", type: "string", default: "runs", help: "parent of the run directory" },
  { name: "exp-name", type: "string", help: "run directory name (default train-flowmap-<time>)" },
  { name: "resume", type: "string", help: "run directory or checkpoint to continue" },
] as const satisfies readonly FlagSpec[];

/** What `main` returns. */
export interface TrainFlowMapResult {
  runDir: string;
  checkpoint: string | null;
  steps: number;
  finalLoss: number;
  /** KL(target ‖ model) by N after the last step (empty with --eval-samples 0). */
  kl: Record<string, number>;
  /** Mean wall time of a step in this session (ms). */
  stepMs: number;
}

const SCHEDULE = [
  "maxTrainSteps",
  "logEvery",
  "checkpointEvery",
  "sampleEvery",
  "evalSamples",
];

/**
 * Run the task (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./train_flowmap.ts";
 * assert.equal(await main(["--help"]), null);
 * ```
 */
export async function main(argv: readonly string[]): Promise<TrainFlowMapResult | null> {
  const given = new Set<string>();
  const f = parseTaskFlags(argv, TRAIN_FLOWMAP_FLAGS, {
    task: FLOWMAP_TASK,
    usage: "Train a flow map by self-distillation (LSD/PSD/ESD) on a 2-D toy (seed 004).",
    given,
  });
  if (!f) return null;
  const diagonalRows = f.diagonalRows ?? Math.round(f.diagonalFraction * f.batchSize);
  if (diagonalRows > f.batchSize) {
    throw new RangeError(
      `Expected --diagonal-rows <= --batch-size (${f.batchSize}) but found ${diagonalRows}`,
    );
  }
  const { _, ...flags } = f;
  const config = {
    ...flags,
    task: FLOWMAP_TASK as typeof FLOWMAP_TASK,
    dataShape: [2],
    diagonalFraction: diagonalRows / f.batchSize,
    diagonalRows,
    expName: f.expName ?? null,
    resume: f.resume ?? null,
  };
  const { run, config: c, resume } = await openTrainingRun({
    task: FLOWMAP_TASK,
    config,
    resume: f.resume ?? null,
    given,
    schedule: SCHEDULE as (keyof typeof config)[],
    outputDir: f.outputDir,
    expName: f.expName ?? null,
  });
  const trainer = flowMapTrainer(c);
  let kl: Record<string, number> = {};
  let t0 = 0, s0 = 0, tEnd = 0;
  try {
    const res = await fit({
      ...trainer,
      setup: (ctx) => {
        t0 = performance.now();
        s0 = ctx.step;
      },
      sample: async (ctx) => {
        if (ctx.final) tEnd = performance.now();
        const n = ctx.final ? c.evalSamples : Math.min(c.evalSamples, 20000);
        if (n === 0) return;
        const r = await flowMapKLReport(trainer.phi, {
          dataset: c.dataset,
          numSamples: n,
          seed: c.seed + 4242,
          plot: `${c.method} step ${ctx.step}`,
        });
        kl = r.kl;
        await ctx.log(Object.fromEntries(Object.entries(kl).map(([k, v]) => [`eval/kl_n${k}`, v])));
        await ctx.run.writeFile(`samples/step-${String(ctx.step).padStart(6, "0")}.png`, r.png!);
        if (ctx.final) {
          const rec = { step: ctx.step, numSamples: n, klBins: 60, klRange: [-2.5, 2.5], kl };
          await ctx.run.writeFile("eval_kl.json", JSON.stringify(rec, null, 2) + "\n");
          console.log(r.table);
        }
      },
    }, {
      run,
      maxSteps: c.maxTrainSteps,
      logEvery: c.logEvery,
      checkpointEvery: c.checkpointEvery,
      sampleEvery: c.sampleEvery,
      gradClip: c.gradClip,
      seed: c.seed,
      resume,
      config: c,
      label: FLOWMAP_TASK,
      signal: taskSignal(),
    });
    const stepMs = res.step > s0 ? ((tEnd || performance.now()) - t0) / (res.step - s0) : NaN;
    console.log(`run:          ${run.dir}`);
    console.log(`checkpoint:   ${res.checkpoint}`);
    console.log(`step time:    ${stepMs.toFixed(1)} ms (incl. logging and checkpoints)`);
    return {
      runDir: run.dir,
      checkpoint: res.checkpoint,
      steps: res.step,
      finalLoss: res.loss,
      kl,
      stepMs,
    };
  } finally {
    trainer.model.dispose();
    trainer.optimizer.dispose();
    trainer.ema?.dispose();
  }
}

if (import.meta.main) await runTask(FLOWMAP_TASK, main);
