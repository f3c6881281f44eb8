/**
 * @file Minibatch optimal transport for OT-CFM: log-domain Sinkhorn built from `logSumExpAdd`
 * (one pass over the cost per half-iteration, one kernel on WebGPU; so it runs on either
 * backend), the couplings torchcfm and seed 003 use, and an exact linear assignment solver on
 * the host.
 * @module
 */
import { Tensor, tidy } from "../tensor.ts";
import {
  abs,
  add,
  argmax,
  div,
  exp,
  flatten2d,
  full,
  gather,
  max,
  maximum,
  mean,
  mul,
  pairwiseSqDist,
  sub,
  sum,
  tensor,
} from "../ops/ops.ts";
import { logSumExpAdd } from "../ops/lse.ts";
import { type Generator, rand } from "../random.ts";
import { checkChoice, checkInt, checkNumber, fmtShape } from "../_util.ts";

/** Options for {@link sinkhorn}. */
export interface SinkhornOptions {
  /** Entropic regularisation ε, in the units of the cost (default 0.05, seed 003's `ot_reg`). */
  reg?: number;
  /** Iteration cap (default 50, seed 003's `ot_iterations`). */
  maxIters?: number;
  /** Stop when the L1 row-marginal error Σ_i |Σ_j π_ij − a_i| falls below this (default 1e-6). */
  tol?: number;
  /** Read the marginal error back every this many iterations (default 10); never every one. */
  checkEvery?: number;
}

/** The result of {@link sinkhorn}. The caller owns `logPlan`. */
export interface SinkhornResult {
  /** log π [n, m]; π has marginals 1/n (rows) and 1/m (columns), so it sums to 1. */
  logPlan: Tensor;
  /** The L1 row-marginal error at the last check (columns are exact after each sweep). */
  marginalError: number;
  /** Iterations run. */
  iters: number;
}

/**
 * Entropic OT between uniform marginals in the log domain: with M = −C/ε, alternate
 * f = log a − LSE_j(M + g) and g = log b − LSE_i(M + f); log π = M + f + g.
 * This is seed 003's loop with proper marginals (1/n, 1/m) instead of ones; the plan differs
 * by a constant factor only. The error is read back every `checkEvery` iterations.
 *
 * @example
 * ```ts
 * import { sinkhorn, tensor } from "../../mod.ts";
 * const { logPlan, marginalError, iters } = await sinkhorn(tensor([[0, 1], [1, 0]]), { reg: 0.1 });
 * console.log(await logPlan.exp().data(), marginalError, iters); // ≈ [0.5, 0, 0, 0.5]
 * ```
 */
export async function sinkhorn(cost: Tensor, opts: SinkhornOptions = {}): Promise<SinkhornResult> {
  if (!(cost instanceof Tensor) || cost.rank !== 2) {
    throw new RangeError(
      `Expected the cost to be a 2-D tensor [n, m] but found ${
        cost instanceof Tensor ? fmtShape(cost.shape) : typeof cost
      }`,
    );
  }
  const reg = checkNumber("Sinkhorn reg", opts.reg ?? 0.05, Number.MIN_VALUE);
  const maxIters = checkInt("Sinkhorn maxIters", opts.maxIters ?? 50, 1);
  const tol = checkNumber("Sinkhorn tol", opts.tol ?? 1e-6, 0);
  const checkEvery = checkInt("Sinkhorn checkEvery", opts.checkEvery ?? 10, 1);
  const [n, m] = cost.shape as [number, number];
  if (n === 0 || m === 0) {
    throw new RangeError(`Expected a non-empty cost matrix but found [${n}, ${m}]`);
  }
  const logA = -Math.log(n), logB = -Math.log(m);
  const M = mul(cost, -1 / reg);
  let f = full([n, 1], 0);
  let g = full([1, m], 0);
  let err = Infinity, iters = 0, checkedAt = -1;
  const rowError = (): Tensor =>
    tidy(() => sum(abs(sub(exp(add(f, logSumExpAdd(M, g, 1, true))), 1 / n))));
  try {
    for (let it = 1; it <= maxIters; it++) {
      const [f2, g2] = tidy(() => {
        // log a − LSE_j(M + g) in one kernel that reads M once (no M + g, no separate sub).
        const fn = logSumExpAdd(M, g, 1, true, { scale: -1, shift: logA });
        const gn = logSumExpAdd(M, fn, 0, true, { scale: -1, shift: logB });
        return [fn, gn];
      });
      f.dispose();
      g.dispose();
      f = f2;
      g = g2;
      iters = it;
      if (it % checkEvery === 0) {
        const e = rowError();
        err = (await e.data())[0]!;
        e.dispose();
        checkedAt = it;
        if (err <= tol) break;
      }
    }
    if (checkedAt !== iters) {
      const e = rowError();
      err = (await e.data())[0]!;
      e.dispose();
    }
    const logPlan = tidy(() => add(add(M, f), g));
    return { logPlan, marginalError: err, iters };
  } finally {
    M.dispose();
    f.dispose();
    g.dispose();
  }
}

/**
 * Exact linear assignment (Hungarian algorithm with potentials, O(n²m)) on the host:
 * minimises Σ_i C[i, σ(i)] over injective σ for an n×m cost (row-major, n ≤ m).
 * Returns σ as an Int32Array of length n. Fine for n up to a few thousand.
 *
 * @example
 * ```ts
 * import { linearSumAssignment } from "../../mod.ts";
 * console.log(linearSumAssignment([4, 1, 3, 2, 0, 5, 3, 2, 2], 3)); // Int32Array [1, 0, 2]
 * ```
 */
export function linearSumAssignment(cost: ArrayLike<number>, n: number, m = n): Int32Array {
  checkInt("assignment rows", n, 0);
  checkInt("assignment columns", m, n);
  if (cost.length !== n * m) {
    throw new RangeError(
      `Expected an assignment cost of ${n}×${m} = ${n * m} values but found ${cost.length}`,
    );
  }
  // e-maxx formulation, 1-indexed; p[j] = row assigned to column j, way[] = augmenting path.
  const u = new Float64Array(n + 1), v = new Float64Array(m + 1);
  const p = new Int32Array(m + 1), way = new Int32Array(m + 1);
  const minv = new Float64Array(m + 1);
  const used = new Uint8Array(m + 1);
  for (let i = 1; i <= n; i++) {
    p[0] = i;
    let j0 = 0;
    minv.fill(Infinity);
    used.fill(0);
    do {
      used[j0] = 1;
      const i0 = p[j0]!;
      const row = (i0 - 1) * m - 1;
      const ui0 = u[i0]!;
      let delta = Infinity, j1 = 0;
      for (let j = 1; j <= m; j++) {
        if (used[j]) continue;
        const cur = cost[row + j]! - ui0 - v[j]!;
        if (cur < minv[j]!) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j]! < delta) {
          delta = minv[j]!;
          j1 = j;
        }
      }
      if (!Number.isFinite(delta)) {
        throw new RangeError("Expected a finite assignment cost but found NaN or infinite entries");
      }
      for (let j = 0; j <= m; j++) {
        if (used[j]) {
          u[p[j]!] += delta;
          v[j] -= delta;
        } else minv[j] -= delta;
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do {
      const j1 = way[j0]!;
      p[j0] = p[j1]!;
      j0 = j1;
    } while (j0 !== 0);
  }
  const rowToCol = new Int32Array(n);
  for (let j = 1; j <= m; j++) if (p[j]! > 0) rowToCol[p[j]! - 1] = j - 1;
  return rowToCol;
}

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
   * Divide the squared-Euclidean cost by its `"max"` (default, as POT users often do, so `reg`
   * is relative and the same value works for 2-D toys and images), its `"mean"`, or `"none"`
   * (seed 003's raw cost).
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
 * import { otCouple, tensor } from "../../mod.ts";
 * const x0 = tensor([[0, 0], [10, 10]]);
 * const x1 = tensor([[10, 11], [0, 1]]);
 * const c = await otCouple(x0, x1, { method: "argmax" });
 * console.log(c.sourceIndex); // Int32Array [1, 0]
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
    opts.normalize ?? "max",
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
