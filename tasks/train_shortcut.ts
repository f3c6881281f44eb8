/**
 * @file `deno task train:shortcut` — a shortcut model (Frans et al. 2024, SC's train.py with
 * `train_type=shortcut`): one row in `--bootstrap-every` regresses on two half-steps of the
 * EMA network at step size d = 2^−k, the others on flow matching on a 128-step grid; sampled
 * in N = 1, 2, 4, 8 … steps with d = 1/N. On the 2-D toys or Fashion-MNIST (class-conditional
 * DiT). Writes a run directory (config.json, metrics.jsonl with `training/loss_flow`,
 * `training/loss_bootstrap`, `training/grad_norm`, checkpoints, samples/step-N.png with the
 * N-step samples, and `eval/w2_Nstep`, `eval/straightness` on toys).
 *
 *   deno task train:shortcut --dataset 8gaussians
 *   deno task train:shortcut --dataset fashion-mnist --batch_size 64 --model.bootstrap_cfg=1
 *   deno task sample --checkpoint runs/train-shortcut-… --num-steps 4
 * @module
 */
import { type FlagSpec, runTask } from "../cli/mod.ts";
import { COMMON_FLAGS, commonConfig, parseTaskFlags } from "./_shortcut.ts";
import { type ShortcutRunResult, trainShortcut } from "./_shortcut_fit.ts";

/**
 * The flags (SC's `--model.*` spellings work too).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TRAIN_SHORTCUT_FLAGS } from "./train_shortcut.ts";
 * assert.equal(TRAIN_SHORTCUT_FLAGS.find((f) => f.name === "bootstrap-ema")?.default, true);
 * ```
 */
export const TRAIN_SHORTCUT_FLAGS = COMMON_FLAGS satisfies readonly FlagSpec[];

const USAGE = `Train a shortcut model (SC train.py defaults: AdamW lr 1e-4, wd 0.1, EMA 0.999,
bootstrap_every 8, 128 timesteps). Example: deno task train:shortcut --dataset 8gaussians`;

/**
 * Run the task; returns the run directory, the loop's result and the final few-step
 * evaluation (null for --help).
 *
 * @example
 * ```ts
 * import { main } from "./train_shortcut.ts";
 * console.log(await main(["--help"])); // prints the usage, then null
 * ```
 */
export async function main(argv: readonly string[]): Promise<ShortcutRunResult | null> {
  const p = parseTaskFlags(argv, TRAIN_SHORTCUT_FLAGS, "train:shortcut", USAGE);
  if (!p) return null;
  return await trainShortcut(commonConfig("train:shortcut", p.f), p.given);
}

if (import.meta.main) await runTask("train:shortcut", main);
