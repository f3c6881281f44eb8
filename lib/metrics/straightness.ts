/**
 * @file Straightness of sampled trajectories (rectified flow, Liu et al. 2022, eq. 5):
 * S = E ∫₀¹ ‖(x1 − x0) − v_t‖² dt, and the path-length ratio.
 * @module
 */
import { Tensor } from "../tensor.ts";
import { fmtShape } from "../_util.ts";

/** The result of {@link straightness}. */
export interface StraightnessResult {
  /** S = E ∫ ‖(x1 − x0)/T − v_t‖² dt (0 for straight constant-speed paths). */
  straightness: number;
  /** E ∫ ‖v_t‖² dt, the kinetic energy of the paths. */
  energy: number;
  /** E ‖x1 − x0‖² / T, the energy of the straight path with the same endpoints. */
  displacementSq: number;
  /** E Σ_k ‖x_{k+1} − x_k‖, the polyline length. */
  pathLength: number;
  /** E ‖x1 − x0‖. */
  displacement: number;
  /** pathLength / displacement (≥ 1; 1 for straight paths). */
  lengthRatio: number;
}

/**
 * Straightness of recorded trajectories (`integrate(…, { record: true })`): the velocity on
 * [t_k, t_{k+1}] is the secant (x_{k+1} − x_k)/Δt_k, so over T = t_K − t_0,
 * S = E Σ_k Δt_k ‖(x_K − x_0)/T − v_k‖² = energy − displacementSq exactly for the polyline.
 * Expectations are over the batch rows.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { straightness, tensor } from "../../mod.ts";
 * const tr = [tensor([[0, 0]]), tensor([[1, 1]]), tensor([[2, 0]])];
 * const s = await straightness(tr);
 * // Secant velocities (2, 2) and (2, −2) over Δt = ½: energy ½·8 + ½·8 = 8; the straight
 * // path from (0, 0) to (2, 0) has energy 4; the polyline is 2√2 long for a displacement of 2.
 * assert.equal(s.energy, 8);
 * assert.equal(s.displacementSq, 4);
 * assert.equal(s.straightness, 4);
 * assert.ok(Math.abs(s.lengthRatio - Math.SQRT2) < 1e-6);
 * ```
 */
export async function straightness(
  trajectory: readonly Tensor[],
  times?: readonly number[],
): Promise<StraightnessResult> {
  const K = trajectory.length;
  if (K < 2) throw new RangeError(`Expected a trajectory of at least 2 states but found ${K}`);
  const ts = times ?? Array.from({ length: K }, (_, k) => k / (K - 1));
  if (ts.length !== K) {
    throw new RangeError(`Expected ${K} times (one per trajectory state) but found ${ts.length}`);
  }
  const s0 = trajectory[0]!.shape;
  for (const x of trajectory) {
    if (
      !(x instanceof Tensor) || x.rank < 1 || x.shape.some((d, i) => d !== s0[i]) ||
      x.rank !== s0.length
    ) {
      throw new RangeError(`Expected every trajectory state to have shape ${fmtShape(s0)}`);
    }
  }
  const B = s0[0]!, D = trajectory[0]!.size / B;
  const xs = await Promise.all(trajectory.map((x) => x.data()));
  const T = ts[K - 1]! - ts[0]!;
  if (!(T !== 0 && Number.isFinite(T))) {
    throw new RangeError(
      `Expected distinct first and last times but found ${ts[0]} and ${ts[K - 1]}`,
    );
  }
  let S = 0, energy = 0, disp2 = 0, len = 0, disp = 0;
  for (let b = 0; b < B; b++) {
    const o = b * D;
    let d2 = 0;
    for (let j = 0; j < D; j++) {
      const d = xs[K - 1]![o + j]! - xs[0]![o + j]!;
      d2 += d * d;
    }
    disp2 += d2 / T;
    disp += Math.sqrt(d2);
    for (let k = 0; k + 1 < K; k++) {
      const dt = ts[k + 1]! - ts[k]!;
      if (dt === 0) continue;
      let seg2 = 0, dev2 = 0;
      for (let j = 0; j < D; j++) {
        const step = xs[k + 1]![o + j]! - xs[k]![o + j]!;
        const dev = (xs[K - 1]![o + j]! - xs[0]![o + j]!) / T - step / dt;
        seg2 += step * step;
        dev2 += dev * dev;
      }
      len += Math.sqrt(seg2);
      energy += seg2 / dt;
      S += dt * dev2;
    }
  }
  return {
    straightness: S / B,
    energy: energy / B,
    displacementSq: disp2 / B,
    pathLength: len / B,
    displacement: disp / B,
    lengthRatio: disp > 0 ? len / disp : 1,
  };
}
