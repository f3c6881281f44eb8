/**
 * @file Learning-rate schedules as pure functions of the step. Each returns
 * `(step, baseLr = 1) => lr`: called with one argument it is a multiplier, with the base
 * rate it is the rate itself (`opt.lr = sched(step, 1e-3)`).
 * @module
 */
import { checkInt, checkNumber } from "../_util.ts";

/** A schedule: the learning rate at `step` (0-based) for base rate `baseLr`. */
export type LrSchedule = (step: number, baseLr?: number) => number;

function checkStep(step: number): number {
  if (!Number.isFinite(step) || step < 0) {
    throw new RangeError(`Expected step to be a number >= 0 but found ${step}`);
  }
  return step;
}

/**
 * The base rate at every step.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim } from "../../mod.ts";
 * assert.equal(optim.constant()(100, 1e-3), 1e-3);
 * assert.equal(optim.constant()(0), 1); // one argument: a multiplier
 * ```
 */
export function constant(): LrSchedule {
  return (step, baseLr = 1) => (checkStep(step), baseLr);
}

/**
 * Linear warm-up: baseLr·min(1, (step + 1)/warmupSteps), then constant.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim } from "../../mod.ts";
 * const s = optim.linearWarmup(10);
 * assert.deepEqual([s(0), s(4), s(9), s(20)], [0.1, 0.5, 1, 1]); // (step + 1)/10, then 1
 * ```
 */
export function linearWarmup(warmupSteps: number): LrSchedule {
  checkInt("warmupSteps", warmupSteps, 0);
  return (step, baseLr = 1) => {
    checkStep(step);
    return warmupSteps === 0 ? baseLr : baseLr * Math.min(1, (step + 1) / warmupSteps);
  };
}

/** Options of `cosine`. */
export interface CosineOptions {
  /** Linear warm-up steps before the decay (default 0). */
  warmup?: number;
  /** Rate at the end of the decay (default 0; same units as baseLr). */
  minLr?: number;
}

/**
 * Cosine decay from baseLr to minLr over `totalSteps` (after an optional linear warm-up):
 * minLr + (baseLr − minLr)·½(1 + cos(π·p)), p = (step − warmup)/(totalSteps − warmup)
 * clamped to [0, 1].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim } from "../../mod.ts";
 * const s = optim.cosine(100);
 * // ½(1 + cos(π·step/100)): 1, then ½ halfway, 0 at the end (and after)
 * [[0, 1], [50, 0.5], [100, 0], [150, 0]].forEach(([k, v]) => assert.ok(Math.abs(s(k!) - v!) < 1e-12));
 * assert.ok(Math.abs(optim.cosine(100, { minLr: 0.1 })(50) - 0.55) < 1e-12);
 * ```
 */
export function cosine(totalSteps: number, opts: CosineOptions = {}): LrSchedule {
  checkInt("totalSteps", totalSteps, 1);
  const warmup = checkInt("warmup", opts.warmup ?? 0, 0, totalSteps - 1);
  const minLr = checkNumber("minLr", opts.minLr ?? 0, 0);
  return (step, baseLr = 1) => {
    checkStep(step);
    if (step < warmup) return baseLr * (step + 1) / warmup;
    const p = Math.min(1, (step - warmup) / (totalSteps - warmup));
    return minLr + (baseLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * p));
  };
}

/**
 * Inverse-square-root decay after `decayStart` steps, as the flow-map code's "sqrt"
 * schedule (Boffi, py/common/state_utils.py; 35k in the checkerboard config):
 * baseLr / √max(step/decayStart, 1).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim } from "../../mod.ts";
 * const s = optim.inverseSqrt(35000);
 * // 1/√max(step/35000, 1): flat until step 35000, then 1/√4 at 4× that
 * assert.deepEqual([s(1000), s(35000), s(140000)], [1, 1, 0.5]);
 * ```
 */
export function inverseSqrt(decayStart: number): LrSchedule {
  checkInt("decayStart", decayStart, 1);
  return (step, baseLr = 1) => baseLr / Math.sqrt(Math.max(checkStep(step) / decayStart, 1));
}
