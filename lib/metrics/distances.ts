/**
 * @file Sample-based distances between distributions: 2-D histogram KL, Wasserstein-2
 * (exact assignment or Sinkhorn) and the unbiased RBF-kernel MMD².
 * @module
 */
import { Tensor, tidy } from "../tensor.ts";
import { div, exp, mul, pairwiseSqDist, sum, tensor } from "../ops/ops.ts";
import { linearSumAssignment, sinkhorn } from "../ot/mod.ts";
import { checkChoice, checkInt, checkNumber, fmtShape } from "../_util.ts";

/** Samples as a tensor [n, d] or a flat host array of n·d values. */
export type Samples = Tensor | Float32Array;

/** Rows of samples on the host. */
async function hostRows(
  name: string,
  x: Samples,
  dim: number | undefined,
): Promise<{ data: Float32Array; n: number; d: number }> {
  if (x instanceof Tensor) {
    if (x.rank !== 2) {
      throw new RangeError(`Expected ${name} to be [n, d] but found ${fmtShape(x.shape)}`);
    }
    return { data: await x.data(), n: x.shape[0]!, d: x.shape[1]! };
  }
  if (!(x instanceof Float32Array)) {
    throw new TypeError(`Expected ${name} to be a Tensor [n, d] or a Float32Array`);
  }
  const d = checkInt("dim", dim ?? 2, 1);
  if (x.length % d !== 0 || x.length === 0) {
    throw new RangeError(
      `Expected ${name} to hold a non-zero multiple of dim = ${d} values but found ${x.length}`,
    );
  }
  return { data: x, n: x.length / d, d };
}

/** Options for {@link histogramKL}. */
export interface HistogramKLOptions {
  /** Bins per axis (default 60, as the NV checkerboard reproduction). */
  bins?: number;
  /** The square [lo, hi]² that is binned (default [−2.5, 2.5]); points outside are dropped. */
  range?: [number, number];
  /** Probability added to every model bin before renormalising (default 1e-10). */
  eps?: number;
}

/** Normalised 2-D histogram (bin probabilities over in-range points), numpy.histogram2d rules. */
function hist2d(x: Float32Array, bins: number, lo: number, hi: number): Float64Array {
  const h = new Float64Array(bins * bins);
  const w = (hi - lo) / bins;
  let kept = 0;
  for (let i = 0; i + 1 < x.length; i += 2) {
    const a = x[i]!, b = x[i + 1]!;
    if (!(a >= lo && a <= hi && b >= lo && b <= hi)) continue;
    // The last bin is closed on the right, like numpy.
    const ia = Math.min(bins - 1, Math.floor((a - lo) / w));
    const ib = Math.min(bins - 1, Math.floor((b - lo) / w));
    h[ia * bins + ib]! += 1;
    kept++;
  }
  if (kept > 0) { for (let k = 0; k < h.length; k++) h[k]! /= kept; }
  return h;
}

/**
 * KL(target ‖ model) = Σ_b P_b·log(P_b / Q_b) between the 2-D histograms of `target` (n×2) and
 * `model` (m×2) samples, each normalised to bin probabilities (so no bin area enters; the NV
 * reproduction's density version omits the area, this mass version does not need it). Empty
 * model bins are smoothed as Q ← (Q + eps)/(1 + K·eps) over K bins; empty target bins add 0.
 * Points outside the range are dropped before normalising.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { histogramKL } from "../../mod.ts";
 * // A 2×2 grid on [−1, 1]²: the target puts mass ½ in two cells, the model all in one.
 * const p = new Float32Array([-0.5, -0.5, 0.5, 0.5]);
 * const q = new Float32Array([-0.5, -0.5, -0.5, -0.5]);
 * const eps = 1e-3, z = 1 + 4 * eps, opts = { bins: 2, range: [-1, 1] as [number, number], eps };
 * const want = 0.5 * Math.log(0.5 / ((1 + eps) / z)) + 0.5 * Math.log(0.5 / (eps / z));
 * assert.ok(Math.abs(histogramKL(p, q, opts) - want) < 1e-9);
 * assert.ok(Math.abs(histogramKL(p, p, opts) - Math.log(0.5 * z / (0.5 + eps))) < 1e-9); // ≈ 0
 * ```
 */
export function histogramKL(
  target: Float32Array,
  model: Float32Array,
  opts: HistogramKLOptions = {},
): number {
  const bins = checkInt("histogram bins", opts.bins ?? 60, 1);
  const [lo, hi] = opts.range ?? [-2.5, 2.5];
  checkNumber("histogram range low", lo);
  checkNumber("histogram range high", hi, lo + Number.EPSILON);
  const eps = checkNumber("histogram eps", opts.eps ?? 1e-10, 0);
  for (const [nm, x] of [["target", target], ["model", model]] as const) {
    if (!(x instanceof Float32Array) || x.length % 2 !== 0 || x.length === 0) {
      throw new RangeError(`Expected ${nm} samples as a Float32Array of n×2 values`);
    }
    // A NaN would fall outside every bin and be dropped like an outlier: refuse it instead.
    const bad = x.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new RangeError(
        `Expected finite ${nm} samples but value ${bad} (row ${bad >> 1}) is ${x[bad]}`,
      );
    }
  }
  const p = hist2d(target, bins, lo, hi), q = hist2d(model, bins, lo, hi);
  const z = 1 + p.length * eps;
  let kl = 0;
  for (let k = 0; k < p.length; k++) {
    const pk = p[k]!;
    if (pk > 0) kl += pk * Math.log(pk / ((q[k]! + eps) / z));
  }
  return kl;
}

/** Options for {@link w2}. */
export interface W2Options {
  /** `"exact"` (default; equal sizes, an optimal assignment) or `"sinkhorn"` (any sizes). */
  method?: "exact" | "sinkhorn";
  /** Row size when the samples are flat Float32Arrays (default 2). */
  dim?: number;
  /** Sinkhorn regularisation relative to the largest pairwise cost (default 1e-3). */
  reg?: number;
  /** Sinkhorn iteration cap (default 2000). */
  maxIters?: number;
}

/**
 * Wasserstein-2 distance between two empirical distributions: √(min_π Σ π_ij‖a_i − b_j‖²).
 * `"exact"` solves the assignment problem (uniform weights, equal sizes; O(n³), fine up to
 * ~2000 points); `"sinkhorn"` uses an entropic plan with a small regularisation (slightly above
 * the exact value) for larger or unequal sets.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor, w2 } from "../../mod.ts";
 * // A translation by (0, 3) moves every point by 3.
 * assert.ok(Math.abs(await w2(tensor([[0, 0], [1, 0]]), tensor([[0, 3], [1, 3]])) - 3) < 1e-6);
 * // Order does not matter: the optimal assignment matches (0,0)↔(0,0), (1,0)↔(1,0).
 * assert.equal(await w2(tensor([[0, 0], [1, 0]]), tensor([[1, 0], [0, 0]])), 0);
 * ```
 */
export async function w2(a: Samples, b: Samples, opts: W2Options = {}): Promise<number> {
  const method = checkChoice("W2 method", opts.method ?? "exact", ["exact", "sinkhorn"] as const);
  const A = await hostRows("a", a, opts.dim), B = await hostRows("b", b, opts.dim);
  if (A.d !== B.d) {
    throw new RangeError(`Expected a and b to have the same dimension but found ${A.d} and ${B.d}`);
  }
  const ta = a instanceof Tensor ? a : tensor(A.data, [A.n, A.d]);
  const tb = b instanceof Tensor ? b : tensor(B.data, [B.n, B.d]);
  const cost = pairwiseSqDist(ta, tb);
  try {
    if (method === "exact") {
      if (A.n !== B.n) {
        throw new RangeError(
          `The exact W2 needs equal sample counts but found ${A.n} and ${B.n}; use method "sinkhorn"`,
        );
      }
      const c = await cost.data();
      const sigma = linearSumAssignment(c, A.n, B.n);
      let s = 0;
      for (let i = 0; i < A.n; i++) s += c[i * B.n + sigma[i]!]!;
      return Math.sqrt(s / A.n);
    }
    const reg = checkNumber("W2 Sinkhorn reg", opts.reg ?? 1e-3, Number.MIN_VALUE);
    const scale = Math.max(1e-30, (await cost.data()).reduce((m, v) => Math.max(m, v), 0));
    const scaled = div(cost, scale);
    const sk = await sinkhorn(scaled, {
      reg,
      maxIters: opts.maxIters ?? 2000,
      tol: 1e-4,
      checkEvery: 20,
    });
    scaled.dispose();
    const tot = tidy(() => sum(mul(exp(sk.logPlan), cost)));
    sk.logPlan.dispose();
    const v = (await tot.data())[0]!;
    tot.dispose();
    return Math.sqrt(Math.max(0, v));
  } finally {
    cost.dispose();
    if (ta !== a) ta.dispose();
    if (tb !== b) tb.dispose();
  }
}

/** Options for {@link mmdRbf}. */
export interface MmdOptions {
  /** RBF bandwidths h; the kernel is Σ_h exp(−‖x − y‖²/(2h²)) (default [0.1, 0.5, 1, 2, 5]). */
  bandwidths?: number[];
  /** Row size when the samples are flat Float32Arrays (default 2). */
  dim?: number;
}

/**
 * Unbiased estimate of the squared maximum mean discrepancy with a sum of RBF kernels:
 * MMD² = Σ_{i≠j} k(a_i, a_j)/(n(n−1)) + Σ_{i≠j} k(b_i, b_j)/(m(m−1)) − 2·Σ k(a_i, b_j)/(nm).
 * It is 0 in expectation for identical distributions (and may be slightly negative).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { mmdRbf, tensor } from "../../mod.ts";
 * // Two copies of (0, 0) against two of (1, 0), one bandwidth h = 1:
 * // MMD² = k(a, a) + k(b, b) − 2·k(a, b) = 2 − 2·exp(−1/2).
 * const a = tensor([[0, 0], [0, 0]]), b = tensor([[1, 0], [1, 0]]);
 * assert.ok(Math.abs(await mmdRbf(a, b, { bandwidths: [1] }) - (2 - 2 * Math.exp(-0.5))) < 1e-5);
 * assert.ok(Math.abs(await mmdRbf(a, a, { bandwidths: [1] })) < 1e-6);
 * ```
 */
export async function mmdRbf(a: Samples, b: Samples, opts: MmdOptions = {}): Promise<number> {
  const hs = opts.bandwidths ?? [0.1, 0.5, 1, 2, 5];
  if (hs.length === 0) throw new RangeError("Expected at least one MMD bandwidth");
  hs.forEach((h, i) => checkNumber(`bandwidths[${i}]`, h, Number.MIN_VALUE));
  const ta = a instanceof Tensor ? a : tensor(a, [a.length / (opts.dim ?? 2), opts.dim ?? 2]);
  const tb = b instanceof Tensor ? b : tensor(b, [b.length / (opts.dim ?? 2), opts.dim ?? 2]);
  if (ta.rank !== 2 || tb.rank !== 2 || ta.shape[1] !== tb.shape[1]) {
    throw new RangeError(
      `Expected a [n, d] and b [m, d] but found ${fmtShape(ta.shape)} and ${fmtShape(tb.shape)}`,
    );
  }
  const n = ta.shape[0]!, m = tb.shape[0]!;
  if (n < 2 || m < 2) {
    throw new RangeError(`Expected at least 2 samples in each set but found ${n} and ${m}`);
  }
  const sums = tidy(() => {
    const ksum = (d: Tensor) => {
      let acc: Tensor | null = null;
      for (const h of hs) {
        const k = sum(exp(mul(d, -1 / (2 * h * h))));
        acc = acc ? acc.add(k) : k;
      }
      return acc!;
    };
    return [
      ksum(pairwiseSqDist(ta, ta)),
      ksum(pairwiseSqDist(tb, tb)),
      ksum(pairwiseSqDist(ta, tb)),
    ];
  });
  const [kaa, kbb, kab] = await Promise.all(sums.map(async (s) => (await s.data())[0]!));
  sums.forEach((s) => s.dispose());
  if (ta !== a) ta.dispose();
  if (tb !== b) tb.dispose();
  // The diagonal k(x, x) = Σ_h 1 = |hs| exactly; remove it for the unbiased estimate.
  const L = hs.length;
  const mmd = (kaa! - n * L) / (n * (n - 1)) + (kbb! - m * L) / (m * (m - 1)) -
    (2 * kab!) / (n * m);
  if (!Number.isFinite(mmd)) {
    throw new RangeError(
      `Expected finite samples for mmdRbf but the MMD is ${mmd} (NaN/Inf in a or b)`,
    );
  }
  return mmd;
}
