/**
 * @file Optimal transport solvers shared by OT-CFM couplings (lib/flow) and distances
 * (lib/metrics): log-domain Sinkhorn built from `logSumExpAdd` (one pass over the cost per
 * half-iteration, one kernel on WebGPU; so it runs on either backend) and an exact linear
 * assignment solver on the host.
 * @module
 */
import { Tensor, tidy } from "../tensor.ts";
import { abs, add, exp, full, mul, sub, sum } from "../ops/ops.ts";
import { logSumExpAdd } from "../ops/lse.ts";

import { checkInt, checkNumber, fmtShape } from "../_util.ts";

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
 * import { strict as assert } from "node:assert";
 * import { sinkhorn, tensor } from "../../mod.ts";
 * const { logPlan, marginalError } = await sinkhorn(tensor([[0, 1], [1, 0]]), { reg: 0.1 });
 * // Uniform marginals, symmetric cost: the plan is K/(2(1 + e^{−10})) with K = exp(−C/0.1).
 * const z = 2 * (1 + Math.exp(-10));
 * const want = [1 / z, Math.exp(-10) / z, Math.exp(-10) / z, 1 / z];
 * const p = await logPlan.exp().data();
 * want.forEach((v, i) => assert.ok(Math.abs(p[i]! - v) < 1e-6));
 * assert.ok(marginalError < 1e-5);
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
 * import { strict as assert } from "node:assert";
 * import { linearSumAssignment } from "../../mod.ts";
 * const cost = [4, 1, 3, 2, 0, 5, 3, 2, 2];
 * const a = linearSumAssignment(cost, 3);
 * assert.deepEqual([...a], [1, 0, 2]);
 * // Brute force over the 6 permutations: nothing is cheaper than 1 + 2 + 2.
 * const perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
 * const best = Math.min(...perms.map((p) => p.reduce((s, j, i) => s + cost[3 * i + j]!, 0)));
 * assert.equal(a.reduce((s, j, i) => s + cost[3 * i + j]!, 0), best);
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
