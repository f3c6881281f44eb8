/**
 * @file Fréchet distance between Gaussian fits of two feature sets (the formula of FID,
 * computed on the host in f64): FD = ‖μa − μb‖² + tr Σa + tr Σb − 2 tr √(√Σa Σb √Σa).
 * Square roots come from a cyclic Jacobi eigendecomposition of symmetric matrices, so a
 * singular (rank-deficient) covariance is handled: its negative round-off eigenvalues are
 * clamped to 0. The features are the caller's (this toolkit uses a small Fashion-MNIST
 * classifier's penultimate layer): the number is an FD in that feature space, not the
 * Inception FID, and not comparable to published FIDs.
 * @module
 */
import { checkInt } from "../_util.ts";

/** Mean and covariance of a feature set (f64, covariance row-major [dim, dim]). */
export interface GaussianStats {
  /** Feature dimension. */
  dim: number;
  /** Samples the statistics were computed from. */
  n: number;
  /** Mean [dim]. */
  mean: Float64Array;
  /** Unbiased covariance (divided by n − 1) [dim·dim], row-major and symmetric. */
  cov: Float64Array;
}

/**
 * Mean and unbiased covariance of `n = x.length / dim` rows of `x` (row-major [n, dim]),
 * accumulated in f64 (two passes: mean first, then centred products).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gaussianStats } from "../../mod.ts";
 * const s = gaussianStats(new Float32Array([0, 0, 2, 2, 4, 1]), 2);
 * assert.deepEqual([...s.mean], [2, 1]);
 * assert.deepEqual([...s.cov], [4, 1, 1, 1]);
 * ```
 */
export function gaussianStats(x: ArrayLike<number>, dim: number): GaussianStats {
  checkInt("dim", dim, 1);
  if (x.length % dim !== 0) {
    throw new RangeError(
      `Expected the features to hold whole rows of ${dim} values but found ${x.length} values`,
    );
  }
  const n = x.length / dim;
  if (n < 2) throw new RangeError(`Expected at least 2 feature rows but found ${n}`);
  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) mean[j]! += x[i * dim + j]!;
  }
  for (let j = 0; j < dim; j++) mean[j]! /= n;
  const cov = new Float64Array(dim * dim);
  const d = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) d[j] = x[i * dim + j]! - mean[j]!;
    for (let a = 0; a < dim; a++) {
      const da = d[a]!;
      if (da === 0) continue;
      const row = a * dim;
      for (let b = a; b < dim; b++) cov[row + b]! += da * d[b]!;
    }
  }
  for (let a = 0; a < dim; a++) {
    for (let b = a; b < dim; b++) {
      const v = cov[a * dim + b]! / (n - 1);
      cov[a * dim + b] = v;
      cov[b * dim + a] = v;
    }
  }
  return { dim, n, mean, cov };
}

/** Eigenvalues and eigenvectors of a symmetric matrix. */
export interface SymmetricEigen {
  /** Eigenvalues [n] (unsorted). */
  values: Float64Array;
  /** Eigenvectors as the columns of a row-major [n, n] matrix: A = V diag(values) Vᵀ. */
  vectors: Float64Array;
}

/**
 * Eigendecomposition of a symmetric matrix `a` (row-major [n, n], f64) by cyclic Jacobi
 * rotations, to machine precision (sweeps stop when the off-diagonal mass is below
 * 1e-30 of the total, or after 100 sweeps). The input is not modified.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { symmetricEigen } from "../../mod.ts";
 * const { values } = symmetricEigen(new Float64Array([2, 1, 1, 2]), 2);
 * assert.deepEqual([...values].sort().map((v) => Math.round(v * 1e12) / 1e12), [1, 3]);
 * ```
 */
export function symmetricEigen(a: ArrayLike<number>, n: number): SymmetricEigen {
  checkInt("n", n, 1);
  if (a.length !== n * n) {
    throw new RangeError(`Expected a ${n}×${n} matrix (${n * n} values) but found ${a.length}`);
  }
  const A = Float64Array.from(a);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  let total = 0;
  for (let i = 0; i < n * n; i++) total += A[i]! * A[i]!;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) off += A[p * n + q]! * A[p * n + q]!;
    }
    if (off <= 1e-30 * total || off === 0) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p * n + q]!;
        if (apq === 0) continue;
        const app = A[p * n + p]!, aqq = A[q * n + q]!;
        // Rotation angle zeroing A[p][q] (Golub & Van Loan, sym.schur2).
        const tau = (aqq - app) / (2 * apq);
        const t = Math.sign(tau || 1) / (Math.abs(tau) + Math.sqrt(1 + tau * tau));
        const c = 1 / Math.sqrt(1 + t * t), s = t * c;
        for (let k = 0; k < n; k++) {
          // A ← Jᵀ A J: columns p and q, then rows p and q.
          const akp = A[k * n + p]!, akq = A[k * n + q]!;
          A[k * n + p] = c * akp - s * akq;
          A[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p * n + k]!, aqk = A[q * n + k]!;
          A[p * n + k] = c * apk - s * aqk;
          A[q * n + k] = s * apk + c * aqk;
        }
        A[p * n + q] = 0;
        A[q * n + p] = 0;
        for (let k = 0; k < n; k++) {
          const vkp = V[k * n + p]!, vkq = V[k * n + q]!;
          V[k * n + p] = c * vkp - s * vkq;
          V[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = A[i * n + i]!;
  return { values, vectors: V };
}

/**
 * The principal square root of a symmetric positive semi-definite matrix (row-major
 * [n, n], f64): V diag(√max(λ, 0)) Vᵀ.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sqrtmPsd } from "../../mod.ts";
 * const r = sqrtmPsd(new Float64Array([4, 0, 0, 9]), 2);
 * assert.deepEqual([...r].map((v) => Math.round(v * 1e9) / 1e9), [2, 0, 0, 3]);
 * ```
 */
export function sqrtmPsd(a: ArrayLike<number>, n: number): Float64Array {
  const { values, vectors: V } = symmetricEigen(a, n);
  const r = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const s = Math.sqrt(Math.max(values[k]!, 0));
    if (s === 0) continue;
    for (let i = 0; i < n; i++) {
      const vik = V[i * n + k]! * s;
      if (vik === 0) continue;
      for (let j = 0; j < n; j++) r[i * n + j]! += vik * V[j * n + k]!;
    }
  }
  return r;
}

function matmul(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k]!;
      if (aik === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j]! += aik * b[k * n + j]!;
    }
  }
  return c;
}

/**
 * Fréchet distance between the Gaussians N(μa, Σa) and N(μb, Σb):
 * ‖μa − μb‖² + tr Σa + tr Σb − 2 tr √(√Σa Σb √Σa), in f64 (≥ 0 up to round-off; negative
 * round-off is clamped to 0). Symmetric in its arguments.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { frechetDistance } from "../../mod.ts";
 * // Diagonal covariances: FD = ‖Δμ‖² + Σ (√a − √b)² = 1 + (2 − 1)² + (3 − 1)² = 6.
 * const a = { dim: 2, n: 0, mean: new Float64Array([1, 0]), cov: new Float64Array([4, 0, 0, 9]) };
 * const b = { dim: 2, n: 0, mean: new Float64Array([0, 0]), cov: new Float64Array([1, 0, 0, 1]) };
 * assert.ok(Math.abs(frechetDistance(a, b) - 6) < 1e-9);
 * ```
 */
export function frechetDistance(a: GaussianStats, b: GaussianStats): number {
  if (a.dim !== b.dim) {
    throw new RangeError(`Cannot compare features of dimension ${a.dim} and ${b.dim}`);
  }
  const n = a.dim;
  let dm = 0, tr = 0;
  for (let i = 0; i < n; i++) {
    dm += (a.mean[i]! - b.mean[i]!) ** 2;
    tr += a.cov[i * n + i]! + b.cov[i * n + i]!;
  }
  const ra = sqrtmPsd(a.cov, n);
  const m = matmul(matmul(ra, b.cov, n), ra, n);
  // Symmetrise away round-off before the eigendecomposition.
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * (m[i * n + j]! + m[j * n + i]!);
      m[i * n + j] = v;
      m[j * n + i] = v;
    }
  }
  let trSqrt = 0;
  for (const l of symmetricEigen(m, n).values) trSqrt += Math.sqrt(Math.max(l, 0));
  return Math.max(0, dm + tr - 2 * trSqrt);
}

/**
 * Fréchet distance between the Gaussian fits ({@linkcode gaussianStats}) of two feature
 * sets, each row-major [n, dim].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { frechetDistanceOf } from "../../mod.ts";
 * const x = new Float32Array([0, 1, 2, 0, 1, 3, 5, 1]);
 * assert.ok(frechetDistanceOf(x, x, 2) < 1e-9); // identical sets
 * const y = x.map((v, i) => (i % 2 === 0 ? v + 3 : v)); // shifted by 3 along the first axis
 * assert.ok(Math.abs(frechetDistanceOf(x, y, 2) - 9) < 1e-9);
 * ```
 */
export function frechetDistanceOf(
  x: ArrayLike<number>,
  y: ArrayLike<number>,
  dim: number,
): number {
  return frechetDistance(gaussianStats(x, dim), gaussianStats(y, dim));
}
