/**
 * @file `deno task train:local` — seed 000's locality-aware flow matching (`train_local.py`):
 * the shortcut objective plus λ‖v(u_t, t) − v(s_t, t)‖² on the flow rows, where u_t = x_t
 * and s_t is the same path from the perturbed noise x0' = x0 + σ·ε, at the SAME t (LFM's
 * script pairs them with shifted times; see `shortcutLoss`). Metrics add
 * `training/loss_locality`, `training/locality_target_diff` (mean ‖(1 − 1e-5)(x0' − x0)‖²,
 * the difference of the two conditional targets) and `training/v_magnitude_prime`.
 *
 *   deno task train:local --dataset 8gaussians
 *   deno task train:local --dataset moons --model.locality_noise_scale=0.1 --model.locality_weight=1.0
 * @module
 */
import { type FlagSpec, runTask } from "../cli/mod.ts";
import { COMMON_FLAGS, commonConfig, parseTaskFlags } from "./_shortcut.ts";
import { type ShortcutRunResult, trainShortcut } from "./_shortcut_fit.ts";

/**
 * The flags: the common ones plus the locality settings of `train_local.py`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TRAIN_LOCAL_FLAGS } from "./train_local.ts";
 * assert.equal(TRAIN_LOCAL_FLAGS.find((f) => f.name === "locality-noise-scale")?.default, 0.1);
 * ```
 */
export const TRAIN_LOCAL_FLAGS = [
  ...COMMON_FLAGS,
  {
    name: "locality-noise-scale",
    type: "number",
    default: 0.1,
    min: 0,
    help: "σ of the noise perturbation",
  },
  { name: "locality-weight", type: "number", default: 1, min: 0, help: "λ of the term" },
] as const satisfies readonly FlagSpec[];

const USAGE = `Train a shortcut model with the locality loss of seed 000 (train_local.py).
Example: deno task train:local --dataset 8gaussians --model.locality_noise_scale=0.1`;

/**
 * Run the task (null for --help); a negative weight or noise scale is a RangeError.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./train_local.ts";
 * await assert.rejects(main(["--locality-weight", "-1"]), /--locality-weight/);
 * ```
 */
export async function main(argv: readonly string[]): Promise<ShortcutRunResult | null> {
  const p = parseTaskFlags(argv, TRAIN_LOCAL_FLAGS, "train:local", USAGE);
  if (!p) return null;
  const cfg = {
    ...commonConfig("train:local", p.f),
    localityNoiseScale: p.f.localityNoiseScale,
    localityWeight: p.f.localityWeight,
  };
  return await trainShortcut(cfg, p.given, (c) => ({
    locality: {
      noiseScale: c.localityNoiseScale as number,
      weight: c.localityWeight as number,
    },
  }));
}

if (import.meta.main) await runTask("train:local", main);
