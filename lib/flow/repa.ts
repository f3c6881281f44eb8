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
 *
 * Also the projection (representation-alignment) loss itself, `projLoss`: REPA's negative
 * cosine between encoder features and projected model features, weighted per sample by a
 * schedule as SV's `SILoss` does.
 * @module
 */
import { maximum, mean, stopGradient, type Tensor, tidy } from "../tensor.ts";
import {
  add,
  cos,
  greater,
  less,
  mul,
  neg,
  onesLike,
  sigmoid,
  sqrt,
  square,
  sub,
  sum,
} from "../ops/ops.ts";
import { checkChoice, checkNumber, fmtShape } from "../_util.ts";

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

/** Options of {@linkcode projLoss}. */
export interface ProjLossOptions extends ProjWeightOptions {
  /**
   * The VA-REPA schedule weighting each sample by its time; omitted, every sample weighs the
   * same (the original REPA loss).
   */
  schedule?: ProjWeightSchedule;
}

/** What {@linkcode projLoss} returns. */
export interface ProjLossResult {
  /** The weighted loss Σ wᵢℓᵢ / Σ wᵢ (0 when Σ wᵢ ≤ 1e-8), a scalar. */
  loss: Tensor;
  /** ℓᵢ = −mean over tokens of cos(zᵢₙ, z̃ᵢₙ), [B]. */
  perSample: Tensor;
  /** The schedule's weights wᵢ, [B]. */
  weights: Tensor;
}

/**
 * The REPA projection loss with VA-REPA time weights (SV loss.py `SILoss`): encoder features
 * z and projected model features z̃, both [B, N, D] (N tokens) or [B, D] (one vector per
 * sample; z may also be [B, 1, D], one global feature every token of z̃ aligns to), are L2-normalised along D (as `F.normalize`: x / max(‖x‖, 1e-12)); per sample
 * ℓᵢ = −(1/N) Σₙ ⟨ẑᵢₙ, z̃̂ᵢₙ⟩; with weights wᵢ = `projWeight(schedule, tᵢ)` (our t: 1 = data)
 * the loss is Σ wᵢℓᵢ / Σ wᵢ, or 0 when Σ wᵢ ≤ 1e-8 (every sample outside the schedule), as SV
 * returns. z is the alignment target: no gradient flows into it. Tensor ops only, so it runs
 * inside `valueAndGrad` on every backend, with no readback.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { projLoss, tensor } from "../../mod.ts";
 * const z = tensor([[1, 0], [0, 2]]);
 * // Sample 0 aligned (cos 1), sample 1 orthogonal (cos 0).
 * const zt = tensor([[3, 0], [5, 0]]);
 * const uniform = projLoss(z, zt, tensor([0.9, 0.1]));
 * assert.ok(Math.abs((await uniform.loss.item()) - -0.5) < 1e-6);
 * // "hard" keeps only t_ref = 1 − t < τ: sample 0 (t_ref 0.1), whose loss is −1.
 * const hard = projLoss(z, zt, tensor([0.9, 0.1]), { schedule: "hard", tau: 0.7 });
 * assert.ok(Math.abs((await hard.loss.item()) - -1) < 1e-6);
 * assert.deepEqual([...await hard.weights.data()], [1, 0]);
 * ```
 */
export function projLoss(
  z: Tensor,
  zTilde: Tensor,
  t: Tensor,
  opts: ProjLossOptions = {},
): ProjLossResult {
  if (!z || !zTilde || !(z.rank === 2 || z.rank === 3)) {
    throw new RangeError(
      `Expected encoder features z [B, N, D] or [B, D] but found ${z ? fmtShape(z.shape) : z}`,
    );
  }
  const fits = (d: number, i: number) =>
    d === z.shape[i] || (i === 1 && z.rank === 3 && z.shape[1] === 1);
  if (zTilde.rank !== z.rank || zTilde.shape.some((d, i) => !fits(d, i))) {
    throw new RangeError(
      `Cannot align projected features of shape ${fmtShape(zTilde.shape)} to encoder ` +
        `features of shape ${fmtShape(z.shape)}: the projector must output the encoder's shape`,
    );
  }
  const B = z.shape[0]!;
  if (t?.rank !== 1 || t.shape[0] !== B) {
    throw new RangeError(`Expected times t [${B}] but found ${t ? fmtShape(t.shape) : t}`);
  }
  return tidy(() => {
    const unit = (x: Tensor) => x.div(maximum(sqrt(sum(square(x), -1, true)), 1e-12));
    const cosine = sum(mul(unit(stopGradient(z)), unit(zTilde)), -1); // [B, N] or [B]
    const perSample = neg(z.rank === 3 ? mean(cosine, -1) : cosine);
    const weights = opts.schedule ? projWeight(opts.schedule, t, opts) : onesLike(t);
    const ws = sum(weights);
    // SV branches on Σw > 1e-8 on the host; a 0/1 factor keeps it on the device.
    const loss = mul(sum(mul(weights, perSample)).div(maximum(ws, 1e-8)), greater(ws, 1e-8));
    return { loss, perSample, weights };
  });
}
