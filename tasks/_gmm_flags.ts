/**
 * @file The flags of `deno task gmm` (SV's gmm_exp.py spellings are accepted too).
 * @module
 */
import { GMM_EXPERIMENTS } from "../mod.ts";
import type { FlagSpec } from "../cli/mod.ts";

/**
 * The flags (SV spellings such as `--vector_field`, `--no_plot_variance` work too).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { GMM_FLAGS } from "./_gmm_flags.ts";
 * assert.equal(GMM_FLAGS.find((f) => f.name === "exp")?.default, "stable_vm");
 * ```
 */
export const GMM_FLAGS = [
  {
    name: "exp",
    type: "choice",
    choices: GMM_EXPERIMENTS,
    default: "stable_vm",
    aliases: ["e"],
    help: "target",
  },
  {
    name: "vector-field",
    type: "choice",
    choices: ["velocity", "score"],
    default: "velocity",
    help: "field to learn",
  },
  {
    name: "score-target",
    type: "choice",
    choices: ["sv", "exact"],
    default: "sv",
    help: "score as SV's −E[x0|x_t] = (1−t)∇log p (sv) or ∇log p (exact)",
  },
  {
    name: "reference",
    type: "choice",
    choices: ["fresh", "bank"],
    default: "fresh",
    help: "StableVM references: fresh batch per step (SV toy) or FIFO bank",
  },
  {
    name: "split-t",
    type: "number",
    default: 1,
    min: 0,
    max: 1,
    help: "StableVM target for t <= split-t, x1 - x0 above (1: every t, SV toy)",
  },
  { name: "only-plot", type: "bool", help: "only plot the variance curves (no training)" },
  {
    name: "plot-variance",
    type: "bool",
    default: true,
    help: "plot variance curves (--no-plot-variance to skip)",
  },
  {
    name: "enable-visualization",
    type: "bool",
    help: "GIF of learned vs true field (trains on the 2-D 8-mode ring)",
  },
  { name: "seed", type: "int", default: 0, min: 0, help: "random seed" },
  {
    name: "max-train-steps",
    type: "int",
    default: 1000,
    min: 1,
    help: "optimizer steps (SV: 20000)",
  },
  { name: "batch-size", type: "int", default: 256, min: 1, help: "batch size" },
  {
    name: "ref-batch-size",
    type: "int",
    default: 2048,
    min: 1,
    help: "STF reference batch / StableVM bank size",
  },
  {
    name: "learning-rate",
    type: "number",
    default: 1e-4,
    min: 0,
    aliases: ["lr"],
    help: "Adam learning rate",
  },
  { name: "ema-decay", type: "number", default: 0.999, min: 0, max: 1, help: "EMA decay" },
  {
    name: "max-grad-norm",
    type: "number",
    default: 1,
    min: 0,
    help: "gradient clipping (all objectives)",
  },
  { name: "dim", type: "int", default: 10, min: 1, help: "mixture dimension" },
  { name: "num-modes", type: "int", default: 100, min: 1, help: "mixture modes" },
  {
    name: "eval-every",
    type: "int",
    default: 250,
    min: 1,
    help: "steps between Fisher evaluations (SV: 500)",
  },
  {
    name: "fisher-samples",
    type: "int",
    default: 2000,
    min: 1,
    help: "held-out samples per t (SV: 10000)",
  },
  {
    name: "variance-dims",
    type: "string",
    default: "10,100,500",
    help: "comma-separated dims for the curves",
  },
  {
    name: "variance-num-t",
    type: "int",
    default: 12,
    min: 1,
    help: "time values per curve (SV: 50)",
  },
  {
    name: "variance-samples",
    type: "int",
    default: 1000,
    min: 2,
    help: "samples per time (SV: 10000)",
  },
  {
    name: "bank-size",
    type: "int",
    default: 256,
    min: 1,
    help: "per-class bank size for the StableVM curve",
  },
  { name: "log-every", type: "int", default: 50, min: 1, help: "steps per metrics line" },
  {
    name: "checkpoint-every",
    type: "int",
    default: 1000,
    min: 1,
    help: "steps between checkpoints (one is always written at the end)",
  },
  { name: "resume", type: "string", help: "run directory or checkpoint to continue" },
  { name: "output-dir", type: "string", default: "runs", help: "parent of the run directory" },
  { name: "exp-name", type: "string", help: "run directory name (default gmm-<time>)" },
  { name: "use-wandb", type: "bool", help: "ignored (metrics go to metrics.jsonl)" },
  { name: "imagenet-data-path", type: "string", help: "not supported (needs image latents)" },
] as const satisfies readonly FlagSpec[];

/**
 * Config keys a resumed run takes from the command line when given (its schedule); the
 * rest come from the run's config.json.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { GMM_SCHEDULE } from "./_gmm_flags.ts";
 * assert.ok(GMM_SCHEDULE.includes("maxTrainSteps"));
 * ```
 */
export const GMM_SCHEDULE = [
  "maxTrainSteps",
  "logEvery",
  "checkpointEvery",
  "evalEvery",
] as const;
