/**
 * @file VA-REPA weight schedules for the representation-alignment (projection) loss
 * (SV loss.py). SV writes them in its flipped time t_ref (0 = data, 1 = noise); these
 * functions take OUR t (0 = noise, 1 = data) and evaluate the reference formula at
 * t_ref = 1 − t:
 *
 *   hard       1[t_ref < τ]
 *   hard_high  1[t_ref ≥ τ]
 *   sigmoid    σ(k(τ − t_ref))
 *   cosine     ½(1 + cos(π t_ref/τ))·1[t_ref < τ]
 *   snr        SNR(t_ref)/(SNR(t_ref) + SNR(τ)),  SNR(u) = ((1−u)/u)²
 *
 * snr is evaluated as (1−t_ref)²τ² / ((1−t_ref)²τ² + t_ref²(1−τ)²) (multiply through by
 * t_ref²τ²), which is finite at both ends (1 at t_ref = 0, 0 at t_ref = 1).
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import { add, cos, less, mul, sigmoid, square, sub } from "../ops/ops.ts";
import { checkChoice, checkNumber } from "../_util.ts";

/**
 * The schedule names, as SV's `--proj-weight-schedule` spells them.
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { PROJ_WEIGHT_SCHEDULES } from "../../mod.ts";
 * assert.deepEqual([...PROJ_WEIGHT_SCHEDULES], ["hard", "hard_high", "sigmoid", "cosine", "snr"]);
 * ```
 */
export const PROJ_WEIGHT_SCHEDULES = ["hard", "hard_high", "sigmoid", "cosine", "snr"] as const;
/** A schedule name. */
export type ProjWeightSchedule = typeof PROJ_WEIGHT_SCHEDULES[number];

/** Schedule parameters: split point τ ∈ (0, 1) (default 0.7), sigmoid sharpness k (20). */
export interface ProjWeightOptions {
  /** Split point τ in SV's time, strictly inside (0, 1). Default 0.7. */
  tau?: number;
  /** Sigmoid sharpness. Default 20. */
  k?: number;
}

function params(name: string, o: ProjWeightOptions) {
  const s = checkChoice("projection weight schedule", name, PROJ_WEIGHT_SCHEDULES);
  const tau = o.tau ?? 0.7;
  if (!(typeof tau === "number" && tau > 0 && tau < 1)) {
    throw new RangeError(`Expected proj tau to be a number in (0, 1) but found ${tau}`);
  }
  const k = checkNumber("proj k", o.k ?? 20);
  return { s, tau, k };
}

/**
 * The weight of one time (our t ∈ [0, 1]).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { projWeightScalar } from "../../mod.ts";
 * assert.equal(projWeightScalar("sigmoid", 0.3), 0.5); // t_ref = 0.7 = τ: sigmoid(0)
 * assert.equal(projWeightScalar("hard", 0.5), 1); // t_ref 0.5 < τ
 * assert.equal(projWeightScalar("hard", 0.2), 0); // t_ref 0.8 ≥ τ
 * ```
 */
export function projWeightScalar(name: string, t: number, opts: ProjWeightOptions = {}): number {
  const { s, tau, k } = params(name, opts);
  checkNumber("t", t, 0, 1);
  const u = 1 - t; // t_ref
  switch (s) {
    case "hard":
      return u < tau ? 1 : 0;
    case "hard_high":
      return u >= tau ? 1 : 0;
    case "sigmoid":
      return 1 / (1 + Math.exp(-k * (tau - u)));
    case "cosine":
      return u < tau ? 0.5 * (1 + Math.cos((Math.PI * u) / tau)) : 0;
    case "snr": {
      const a = (1 - u) * (1 - u) * tau * tau, b = u * u * (1 - tau) * (1 - tau);
      return a / (a + b);
    }
  }
}

/**
 * The weights of a tensor of times (our t), same shape as `t`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { projWeight, tensor } from "../../mod.ts";
 * const w = await projWeight("cosine", tensor([1, 0.65, 0.2]), { tau: 0.7 }).data();
 * // t_ref = 1 − t = [0, 0.35, 0.8]: ½(1 + cos(π·t_ref/τ)) below τ, else 0 → [1, 0.5, 0]
 * [1, 0.5, 0].forEach((v, i) => assert.ok(Math.abs(w[i]! - v) < 1e-6));
 * ```
 */
export function projWeight(name: string, t: Tensor, opts: ProjWeightOptions = {}): Tensor {
  const { s, tau, k } = params(name, opts);
  return tidy(() => {
    const u = sub(1, t);
    const below = less(u, tau);
    switch (s) {
      case "hard":
        return below;
      case "hard_high":
        return sub(1, below);
      case "sigmoid":
        return sigmoid(mul(sub(tau, u), k));
      case "cosine":
        return mul(mul(add(cos(mul(u, Math.PI / tau)), 1), 0.5), below);
      case "snr": {
        const a = mul(square(t), tau * tau), b = mul(square(u), (1 - tau) * (1 - tau));
        return a.div(add(a, b));
      }
    }
  });
}
