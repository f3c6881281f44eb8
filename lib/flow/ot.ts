/**
 * @file Minibatch optimal transport couplings for OT-CFM: the couplings torchcfm and seed 003
 * use, built on the solvers of lib/ot.
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import {
  argmax,
  div,
  exp,
  flatten2d,
  gather,
  max,
  maximum,
  mean,
  pairwiseSqDist,
  tensor,
} from "../ops/ops.ts";

import { type Generator, rand } from "../random.ts";
import { checkChoice, fmtShape } from "../_util.ts";

import { linearSumAssignment, sinkhorn, type SinkhornOptions } from "../ot/mod.ts";

/** How {@link otCouple} turns the plan into pairs. */
export type CouplingMethod = "argmax" | "sample" | "exact";

/** Options for {@link otCouple}. */
export interface OtCoupleOptions extends SinkhornOptions {
  /**
   * `"argmax"` (default, seed 003): for each data point j take the noise row argmax_i π_ij
   * (rows may repeat); `"sample"` (torchcfm `sample_plan`): draw m pairs (i, j) from π with
   * replacement; `"exact"`: the optimal permutation (Hungarian on the host; n = m ≤ ~512).
   */
  method?: CouplingMethod;
  /**
   * The squared-Euclidean cost as it is (`"none"`, the default: seed 003's and torchcfm's
   * `pot.sinkhorn(reg=0.05)` on the raw cost), or divided by its `"max"` or `"mean"` so that
   * `reg` is relative to the batch's scale. Normalising changes the plan: on 8gaussians at
   * batch 256 the maximum cost is ~104, so reg 0.05 on the max-normalised cost acts like ~5 on
   * the raw one, and the argmax coupling then reuses a few noise rows for most data points.
   */
  normalize?: "max" | "mean" | "none";
  /** Labels of the data rows x1 [m]; they travel with their samples. */
  labels?: Tensor;
  /** Random stream for `"sample"` (default: the global generator). */
  generator?: Generator;
}

/** The result of {@link otCouple}. All tensors are new and belong to the caller. */
export interface Coupling {
  /** Source rows, reordered to pair with `x1`. */
  x0: Tensor;
  /** Data rows (the input order, except for `"sample"`). */
  x1: Tensor;
  /** Labels of `x1`, when labels were given. */
  labels?: Tensor;
  /** Row of the input x0 used for each output pair. */
  sourceIndex: Int32Array;
  /** Row of the input x1 used for each output pair. */
  targetIndex: Int32Array;
  /** Sinkhorn's L1 row-marginal error (0 for `"exact"`). */
  marginalError: number;
  /** Sinkhorn iterations (0 for `"exact"`). */
  iters: number;
}

/**
 * Pair a minibatch of noise x0 [n, ...] with data x1 [m, ...] by (entropic) optimal transport
 * on the squared Euclidean cost between flattened rows.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { otCouple, tensor } from "../../mod.ts";
 * const x0 = tensor([[0, 0], [10, 10]]);
 * const x1 = tensor([[10, 11], [0, 1]]);
 * const c = await otCouple(x0, x1, { method: "argmax" });
 * // Pairing x1[0] with x0[1] and x1[1] with x0[0] costs 1 + 1; the identity, 221 + 181.
 * assert.deepEqual([...c.sourceIndex], [1, 0]);
 * ```
 */
export async function otCouple(
  x0: Tensor,
  x1: Tensor,
  opts: OtCoupleOptions = {},
): Promise<Coupling> {
  const method = checkChoice(
    "coupling method",
    opts.method ?? "argmax",
    ["argmax", "sample", "exact"] as const,
  );
  const normalize = checkChoice(
    "cost normalisation",
    opts.normalize ?? "none",
    ["max", "mean", "none"] as const,
  );
  if (x0.rank < 1 || x1.rank < 1 || x0.size / x0.shape[0]! !== x1.size / x1.shape[0]!) {
    throw new RangeError(
      `Expected x0 and x1 to have the same row size but found ${fmtShape(x0.shape)} and ${
        fmtShape(x1.shape)
      }`,
    );
  }
  const n = x0.shape[0]!, m = x1.shape[0]!;
  if (opts.labels && opts.labels.shape[0] !== m) {
    throw new RangeError(
      `Expected labels of shape [${m}] (one per row of x1) but found ${
        fmtShape(opts.labels.shape)
      }`,
    );
  }
  const cost = tidy(() => {
    const c = pairwiseSqDist(flatten2d(x0), flatten2d(x1));
    if (normalize === "none") return c;
    const s = normalize === "max" ? max(c) : mean(c);
    return div(c, maximum(s, 1e-30));
  });
  let sourceIndex: Int32Array, targetIndex: Int32Array;
  let marginalError = 0, iters = 0;
  try {
    if (method === "exact") {
      if (n !== m) {
        throw new RangeError(
          `The exact coupling needs equal batch sizes but found x0 ${n} and x1 ${m} rows`,
        );
      }
      const rowToCol = linearSumAssignment(await cost.data(), n, m);
      sourceIndex = new Int32Array(m);
      for (let i = 0; i < n; i++) sourceIndex[rowToCol[i]!] = i;
      targetIndex = Int32Array.from({ length: m }, (_, j) => j);
    } else {
      const sk = await sinkhorn(cost, opts);
      marginalError = sk.marginalError;
      iters = sk.iters;
      try {
        if (method === "argmax") {
          const idx = argmax(sk.logPlan, 0);
          sourceIndex = Int32Array.from(await idx.data());
          idx.dispose();
          targetIndex = Int32Array.from({ length: m }, (_, j) => j);
        } else {
          const pl = exp(sk.logPlan);
          const plan = await pl.data();
          pl.dispose();
          let u: ArrayLike<number>;
          if (opts.generator) u = opts.generator.uniformHost(m);
          else {
            const r = rand([m]);
            u = await r.data();
            r.dispose();
          }
          [sourceIndex, targetIndex] = samplePlan(plan, n, m, u);
        }
      } finally {
        sk.logPlan.dispose();
      }
    }
  } finally {
    cost.dispose();
  }
  const si = tensor(Float32Array.from(sourceIndex)), ti = tensor(Float32Array.from(targetIndex));
  const out: Coupling = {
    x0: gather(x0, si, 0),
    x1: gather(x1, ti, 0),
    sourceIndex,
    targetIndex,
    marginalError,
    iters,
  };
  if (opts.labels) out.labels = gather(opts.labels, ti, 0);
  si.dispose();
  ti.dispose();
  return out;
}

/** Draw pairs from a plan by inverse CDF over its flattened entries (uniform if degenerate). */
function samplePlan(
  plan: Float32Array,
  n: number,
  m: number,
  u: ArrayLike<number>,
): [Int32Array, Int32Array] {
  const cdf = new Float64Array(n * m);
  let acc = 0;
  for (let k = 0; k < n * m; k++) {
    const p = plan[k]!;
    acc += Number.isFinite(p) && p > 0 ? p : 0;
    cdf[k] = acc;
  }
  // torchcfm falls back to a uniform plan when the solver returns a degenerate one.
  const uniform = !(acc > 0) || !Number.isFinite(acc);
  const src = new Int32Array(u.length), dst = new Int32Array(u.length);
  for (let s = 0; s < u.length; s++) {
    let k: number;
    if (uniform) k = Math.min(n * m - 1, Math.floor(u[s]! * n * m));
    else {
      const target = u[s]! * acc;
      let lo = 0, hi = n * m - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cdf[mid]! > target) hi = mid;
        else lo = mid + 1;
      }
      k = lo;
    }
    src[s] = Math.floor(k / m);
    dst[s] = k % m;
  }
  return [src, dst];
}
