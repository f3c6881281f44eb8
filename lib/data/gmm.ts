/**
 * @file Diagonal Gaussian mixtures as toy data, with the exact marginal and class-conditional
 * velocity and score of the linear path from an N(0, I) source (SV gmm_exp.py setup).
 *
 * Convention (ours): t = 0 is noise, t = 1 is data, x_t = (1−t)·x0 + t·x1, x0 ~ N(0, I),
 * x1 ~ Σ_k π_k N(μ_k, diag σ²_k). Given the component k, x_t is Gaussian:
 *
 *   x_t | k ~ N(t·μ_k, diag s_k),  s_k = t²σ²_k + (1−t)²                         (G1)
 *   E[x1 | x_t, k] = μ_k + (t σ²_k / s_k)(x_t − tμ_k)    (Cov(x1, x_t | k) = tσ²_k)  (G2)
 *   E[x0 | x_t, k] = ((1−t) / s_k)(x_t − tμ_k)           (Cov(x0, x_t | k) = (1−t)I) (G3)
 *   v_k(x) = E[x1 − x0 | x_t = x, k] = μ_k + ((tσ²_k − (1−t)) / s_k)(x − tμ_k)       (G4)
 *   ∇ log p_t(x | k) = −(x − tμ_k) / s_k                                             (G5)
 *   w_k(x) ∝ π_k N(x; tμ_k, diag s_k),  v = Σ_k w_k v_k,  ∇ log p_t = Σ_k w_k ∇ log p_t(·|k)
 *
 * (G3) is written with the covariance instead of (x_t − t·E[x1])/(1 − t), so nothing is
 * divided by 1 − t and the field stays finite at t = 1; s_k ≥ σ²_k/(1+σ²_k) > 0 for all t.
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import {
  add,
  concat,
  gather,
  logSoftmax,
  logSumExp,
  matmul,
  mul,
  reshape,
  sliceRows,
  sub,
  sum,
  tensor,
  unary,
} from "../ops/ops.ts";
import { Generator } from "../random.ts";
import { checkInt, checkNumber } from "../_util.ts";

const LOG_2PI = Math.log(2 * Math.PI);
// Rows per chunk on the per-sample-t path, so [rows, K, d] stays near 4M floats.
const CHUNK_FLOATS = 1 << 22;

/** Parameters of a diagonal Gaussian mixture (row-major [K, d] means and variances). */
export interface GaussianMixtureParams {
  /** Component means, K·d values (row k = μ_k). */
  means: ArrayLike<number>;
  /** Per-dimension variances σ²_k, K·d values, each > 0. */
  variances: ArrayLike<number>;
  /** Mixture weights (K values, > 0; normalised here). */
  weights: ArrayLike<number>;
  /** Dimension d. */
  dim: number;
}

/** Samples drawn from a mixture: points and their component index (the class). */
export interface MixtureSample {
  /** Points, shape [n, d]. */
  x: Tensor;
  /** Component indices as exact f32 integers, shape [n]. */
  labels: Tensor;
}

/** Host-side samples: points (n·d, row-major) and component indices. */
export interface MixtureSampleHost {
  /** Points, n·d values row-major. */
  x: Float32Array;
  /** Component indices. */
  labels: Int32Array;
}

/**
 * A diagonal Gaussian mixture with its exact flow-matching fields.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { GaussianMixture, Generator } from "../../mod.ts";
 * const gmm = GaussianMixture.reference({ dim: 2, numModes: 4, seed: 0 });
 * const { x, labels } = gmm.sample(8, new Generator(1));
 * const v = gmm.velocity(x, 0.5); // exact E[x1 − x0 | x_t = x] at t = 0.5
 * assert.deepEqual([[...x.shape], [...labels.shape], [...v.shape]], [[8, 2], [8], [8, 2]]);
 * assert.ok((await labels.data()).every((l) => Number.isInteger(l) && l >= 0 && l < 4));
 * ```
 */
export class GaussianMixture {
  /** Dimension d. */
  readonly dim: number;
  /** Number of components K. */
  readonly numModes: number;
  /** Means, K·d row-major. */
  readonly means: Float32Array;
  /** Variances, K·d row-major. */
  readonly variances: Float32Array;
  /** Normalised weights π_k. */
  readonly weights: Float32Array;

  /** A mixture from explicit parameters (validated). */
  constructor(p: GaussianMixtureParams) {
    checkInt("mixture dim", p.dim, 1);
    const K = p.weights.length;
    checkInt("number of mixture components", K, 1);
    if (p.means.length !== K * p.dim || p.variances.length !== K * p.dim) {
      throw new RangeError(
        `Expected mixture means and variances to have ${K}·${p.dim} = ${
          K * p.dim
        } values but found ${p.means.length} and ${p.variances.length}`,
      );
    }
    let tot = 0;
    for (let k = 0; k < K; k++) {
      checkNumber(`mixture weight ${k}`, p.weights[k]!, Number.MIN_VALUE);
      tot += p.weights[k]!;
    }
    for (let i = 0; i < p.variances.length; i++) {
      checkNumber(`mixture variance ${i}`, p.variances[i]!, Number.MIN_VALUE);
      checkNumber(`mixture mean ${i}`, p.means[i]!);
    }
    this.dim = p.dim;
    this.numModes = K;
    this.means = Float32Array.from(p.means);
    this.variances = Float32Array.from(p.variances);
    this.weights = Float32Array.from(p.weights, (w) => w / tot);
  }

  /**
   * The SV gmm_exp.py mixture: means ~ U(−1, 1), per-dimension variances ~ U(0.01, 0.1),
   * weights ~ U(0.1, 1) normalised; 100 modes in 10 dimensions by default.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { GaussianMixture } from "../../mod.ts";
   * const gmm = GaussianMixture.reference({ seed: 0 });
   * assert.deepEqual([gmm.numModes, gmm.dim], [100, 10]);
   * // SV's reference: means in [−1, 1], variances in [0.01, 0.1].
   * assert.ok(gmm.means.every((m) => m >= -1 && m <= 1));
   * assert.ok(gmm.variances.every((v) => v >= 0.01 - 1e-7 && v <= 0.1 + 1e-7));
   * ```
   */
  static reference(opts: { dim?: number; numModes?: number; seed?: number } = {}): GaussianMixture {
    const dim = checkInt("mixture dim", opts.dim ?? 10, 1);
    const K = checkInt("number of mixture modes", opts.numModes ?? 100, 1);
    const g = new Generator(opts.seed ?? 0);
    const um = g.uniformHost(K * dim), uv = g.uniformHost(K * dim), uw = g.uniformHost(K);
    return new GaussianMixture({
      dim,
      means: Array.from(um, (u) => -1 + 2 * u),
      variances: Array.from(uv, (u) => 0.01 + 0.09 * u),
      weights: Array.from(uw, (u) => 0.1 + 0.9 * u),
    });
  }

  /**
   * A 2-D ring of equally weighted isotropic modes (for pictures): mode k sits at
   * radius·(cos 2πk/K, sin 2πk/K).
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { GaussianMixture } from "../../mod.ts";
   * const ring = GaussianMixture.ring({ numModes: 8 });
   * assert.equal(ring.dim, 2);
   * // mode 2 of 8 at radius 2: 2·(cos π/2, sin π/2)
   * assert.ok(Math.abs(ring.means[4]!) < 1e-6 && Math.abs(ring.means[5]! - 2) < 1e-6);
   * ```
   */
  static ring(
    opts: { numModes?: number; radius?: number; variance?: number } = {},
  ): GaussianMixture {
    const K = checkInt("number of ring modes", opts.numModes ?? 8, 1);
    const r = checkNumber("ring radius", opts.radius ?? 2, 0);
    const v = checkNumber("ring variance", opts.variance ?? 0.02, Number.MIN_VALUE);
    const means: number[] = [];
    for (let k = 0; k < K; k++) {
      means.push(r * Math.cos((2 * Math.PI * k) / K), r * Math.sin((2 * Math.PI * k) / K));
    }
    return new GaussianMixture({
      dim: 2,
      means,
      variances: new Array(2 * K).fill(v),
      weights: new Array(K).fill(1),
    });
  }

  #labelsHost(n: number, gen: Generator): Int32Array {
    const u = gen.uniformHost(n);
    const cdf = new Float64Array(this.numModes);
    let c = 0;
    for (let k = 0; k < this.numModes; k++) cdf[k] = c += this.weights[k]!;
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const x = u[i]! * c;
      let lo = 0, hi = this.numModes - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cdf[mid]! > x) hi = mid;
        else lo = mid + 1;
      }
      out[i] = lo;
    }
    return out;
  }

  /**
   * Draw `n` points and their components; labels on the host, noise from `gen` on the
   * current backend.
   */
  sample(n: number, gen: Generator): MixtureSample {
    checkInt("number of samples", n, 1);
    const lab = this.#labelsHost(n, gen);
    return tidy(() => {
      const labels = tensor(Float32Array.from(lab), [n]);
      const mu = gather(this.#meansT(), labels, 0);
      const sd = gather(unary("sqrt", this.#varsT()), labels, 0);
      const x = add(mu, mul(sd, gen.normal([n, this.dim])));
      return { x, labels };
    });
  }

  /**
   * Draw `n` points on the host (Box–Muller on host uniforms from `gen`); useful for
   * datasets and memory banks.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { GaussianMixture, Generator } from "../../mod.ts";
   * const ring = GaussianMixture.ring();
   * const { x, labels } = ring.sampleHost(4, new Generator(0));
   * assert.deepEqual([x.length, labels.length], [8, 4]);
   * // Each point lies within 6 standard deviations (√0.02 per axis) of its mode.
   * labels.forEach((k, i) => {
   *   const dx = x[2 * i]! - ring.means[2 * k]!, dy = x[2 * i + 1]! - ring.means[2 * k + 1]!;
   *   assert.ok(Math.hypot(dx, dy) < 6 * Math.sqrt(0.02));
   * });
   * ```
   */
  sampleHost(n: number, gen: Generator): MixtureSampleHost {
    checkInt("number of samples", n, 1);
    const d = this.dim;
    const labels = this.#labelsHost(n, gen);
    const u = gen.uniformHost(2 * n * d);
    const x = new Float32Array(n * d);
    for (let i = 0; i < n * d; i++) {
      const r = Math.sqrt(-2 * Math.log(1 - u[2 * i]!));
      const z = r * Math.cos(2 * Math.PI * u[2 * i + 1]!);
      const k = labels[Math.floor(i / d)]!, j = i % d;
      x[i] = this.means[k * d + j]! + Math.sqrt(this.variances[k * d + j]!) * z;
    }
    return { x, labels };
  }

  #meansT(): Tensor {
    return tensor(this.means, [this.numModes, this.dim]);
  }
  #varsT(): Tensor {
    return tensor(this.variances, [this.numModes, this.dim]);
  }

  #checkX(x: Tensor): number {
    if (x.rank !== 2 || x.shape[1] !== this.dim) {
      throw new RangeError(
        `Expected x to have shape [n, ${this.dim}] but found [${x.shape.join(", ")}]`,
      );
    }
    return x.shape[0]!;
  }

  #checkT(t: number | Tensor, n: number): void {
    if (typeof t === "number") checkNumber("t", t, 0, 1);
    else if (t.size !== n) {
      throw new RangeError(
        `Expected t to be a number or a tensor with ${n} entries but found shape [${
          t.shape.join(", ")
        }]`,
      );
    }
  }

  // Shared-t path (G1)–(G5) via matmuls: O(n·K + K·d) memory.
  #scalarT(x: Tensor, t: number, what: "velocity" | "score" | "logp" | "posterior"): Tensor {
    return tidy(() => {
      const K = this.numModes, d = this.dim;
      const mu = this.means, v = this.variances;
      const invS = new Float32Array(K * d), tMuInvS = new Float32Array(K * d);
      const c = new Float32Array(K * d), cMu = new Float32Array(K * d);
      const muInvS = new Float32Array(K * d);
      const konst = new Float32Array(K);
      for (let k = 0; k < K; k++) {
        let acc = Math.log(this.weights[k]!);
        for (let j = 0; j < d; j++) {
          const i = k * d + j;
          const s = t * t * v[i]! + (1 - t) * (1 - t);
          invS[i] = 1 / s;
          tMuInvS[i] = (t * mu[i]!) / s;
          muInvS[i] = mu[i]! / s;
          c[i] = (t * v[i]! - (1 - t)) / s;
          cMu[i] = c[i]! * mu[i]!;
          acc -= 0.5 * (LOG_2PI + Math.log(s) + (t * t * mu[i]! * mu[i]!) / s);
        }
        konst[k] = acc;
      }
      const T = (a: Float32Array) => tensor(a, [K, d]);
      // log π_k N(x; tμ_k, s_k) = konst_k − ½ x²·(1/s_k) + x·(tμ_k/s_k)
      const quad = matmul(unary("square", x), T(invS), { transB: true });
      const lin = matmul(x, T(tMuInvS), { transB: true });
      const logits = add(sub(lin, mul(quad, 0.5)), tensor(konst, [1, K]));
      if (what === "logp") return logSumExp(logits, 1);
      const w = unary("exp", logSoftmax(logits, 1));
      if (what === "posterior") return w;
      if (what === "velocity") {
        // Σ_k w_k [μ_k + c_k(x − tμ_k)] = w·μ + x ⊙ (w·c) − t (w·(c⊙μ))   (G4)
        return add(
          add(matmul(w, this.#meansT()), mul(x, matmul(w, T(c)))),
          mul(matmul(w, T(cMu)), -t),
        );
      }
      // Σ_k w_k [−(x − tμ_k)/s_k] = −x ⊙ (w·(1/s)) + t (w·(μ/s))            (G5)
      return sub(mul(matmul(w, T(muInvS)), t), mul(x, matmul(w, T(invS))));
    });
  }

  // Per-sample-t path: broadcast to [rows, K, d], in row chunks.
  #tensorT(x: Tensor, t: Tensor, what: "velocity" | "score" | "logp" | "posterior"): Tensor {
    const n = x.shape[0]!, K = this.numModes, d = this.dim;
    const rows = Math.max(1, Math.floor(CHUNK_FLOATS / (K * d)));
    const parts: Tensor[] = [];
    const tt = reshape(t, [n, 1, 1]);
    for (let r0 = 0; r0 < n; r0 += rows) {
      const r1 = Math.min(n, r0 + rows);
      parts.push(tidy(() => {
        const xc = reshape(sliceRows(x, r0, r1), [r1 - r0, 1, d]);
        const tc = sliceRows(tt, r0, r1);
        const mu = reshape(this.#meansT(), [1, K, d]);
        const vv = reshape(this.#varsT(), [1, K, d]);
        const omt = sub(1, tc);
        const s = add(mul(unary("square", tc), vv), unary("square", omt)); // (G1)
        const diff = sub(xc, mul(tc, mu));
        const logN = mul(
          sum(add(unary("log", s), add(unary("square", diff).div(s), LOG_2PI)), 2),
          -0.5,
        );
        const logits = add(logN, tensor(Float32Array.from(this.weights, Math.log), [1, K]));
        if (what === "logp") return logSumExp(logits, 1);
        const w = unary("exp", logSoftmax(logits, 1));
        if (what === "posterior") return w;
        const field = what === "velocity"
          ? add(mu, mul(sub(mul(tc, vv), omt).div(s), diff)) // (G4)
          : mul(diff.div(s), -1); // (G5)
        return sum(mul(reshape(w, [r1 - r0, K, 1]), field), 1);
      }));
    }
    tt.dispose();
    if (parts.length === 1) return parts[0]!;
    const out = concat(parts, 0);
    parts.forEach((p) => p.dispose());
    return out;
  }

  #field(x: Tensor, t: number | Tensor, what: "velocity" | "score" | "logp" | "posterior") {
    const n = this.#checkX(x);
    this.#checkT(t, n);
    return typeof t === "number" ? this.#scalarT(x, t, what) : this.#tensorT(x, t, what);
  }

  /**
   * Exact marginal velocity v(x, t) = E[x1 − x0 | x_t = x] (G4), shape [n, d]; `t` is a
   * number in [0, 1] or a tensor with one time per row.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { GaussianMixture, tensor } from "../../mod.ts";
   * // At t = 1 each mode's conditional velocity at x is μ_k + (x − μ_k) = x, so at the centre
   * // of the symmetric ring the velocity is 0; at t = 0 (x_t = x0 ~ N(0, I)) it is
   * // E[x1] − x = −x for a mixture of mean 0.
   * const ring = GaussianMixture.ring();
   * const v1 = await ring.velocity(tensor([[0, 0]]), 1).data();
   * assert.ok(Math.abs(v1[0]!) < 1e-5 && Math.abs(v1[1]!) < 1e-5);
   * const v0 = await ring.velocity(tensor([[0.5, -1]]), 0).data();
   * assert.ok(Math.abs(v0[0]! + 0.5) < 1e-5 && Math.abs(v0[1]! - 1) < 1e-5);
   * ```
   */
  velocity(x: Tensor, t: number | Tensor): Tensor {
    return this.#field(x, t, "velocity");
  }

  /**
   * Exact marginal score ∇ log p_t(x) (G5), shape [n, d].
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { GaussianMixture, tensor } from "../../mod.ts";
   * const ring = GaussianMixture.ring(); // 8 modes at radius 2, variance 0.02
   * const s = await ring.score(tensor([[0.5, 0]]), 0.3).data();
   * // By hand: p_t = Σ_k N(t·μ_k, s²I)/8 with s² = t²·0.02 + (1 − t)²; the score is the
   * // posterior-weighted −(x − t·μ_k)/s².
   * const t = 0.3, s2 = t * t * 0.02 + (1 - t) ** 2;
   * let w = 0, gx = 0, gy = 0;
   * for (let k = 0; k < 8; k++) {
   *   const mx = t * 2 * Math.cos(Math.PI * k / 4), my = t * 2 * Math.sin(Math.PI * k / 4);
   *   const e = Math.exp(-((0.5 - mx) ** 2 + my ** 2) / (2 * s2));
   *   w += e, gx += e * -(0.5 - mx) / s2, gy += e * my / s2;
   * }
   * assert.ok(Math.abs(s[0]! - gx / w) < 1e-5 && Math.abs(s[1]! - gy / w) < 1e-5);
   * ```
   */
  score(x: Tensor, t: number | Tensor): Tensor {
    return this.#field(x, t, "score");
  }

  /**
   * Exact log density log p_t(x) of x_t, shape [n].
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { GaussianMixture, tensor } from "../../mod.ts";
   * const lp = await GaussianMixture.ring().logProb(tensor([[0, 0]]), 0).item(); // log N(0; 0, I)
   * assert.ok(Math.abs(lp - -Math.log(2 * Math.PI)) < 1e-5); // −(d/2)·log 2π with d = 2
   * ```
   */
  logProb(x: Tensor, t: number | Tensor): Tensor {
    return this.#field(x, t, "logp");
  }

  /**
   * Posterior component weights w_k(x) at time t, shape [n, K].
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { GaussianMixture, tensor } from "../../mod.ts";
   * const w = await GaussianMixture.ring().posterior(tensor([[2, 0]]), 1).data();
   * // At t = 1 the weights are ∝ exp(−‖x − μ_k‖²/(2·0.02)); x sits on mode 0.
   * const e = Array.from({ length: 8 }, (_, k) =>
   *   Math.exp(-((2 - 2 * Math.cos(Math.PI * k / 4)) ** 2 + (2 * Math.sin(Math.PI * k / 4)) ** 2) / 0.04));
   * const z = e.reduce((a, b) => a + b, 0);
   * e.forEach((v, k) => assert.ok(Math.abs(w[k]! - v / z) < 1e-6));
   * ```
   */
  posterior(x: Tensor, t: number | Tensor): Tensor {
    return this.#field(x, t, "posterior");
  }

  #conditional(x: Tensor, t: number | Tensor, labels: Tensor, what: "velocity" | "score") {
    const n = this.#checkX(x);
    this.#checkT(t, n);
    if (labels.size !== n) {
      throw new RangeError(
        `Expected labels to have ${n} entries but found shape [${labels.shape.join(", ")}]`,
      );
    }
    return tidy(() => {
      const lab = reshape(labels, [n]);
      const mu = gather(this.#meansT(), lab, 0);
      const vv = gather(this.#varsT(), lab, 0);
      const tc = typeof t === "number" ? t : reshape(t, [n, 1]);
      const omt = typeof tc === "number" ? 1 - tc : sub(1, tc);
      const omt2 = typeof omt === "number" ? omt * omt : unary("square", omt);
      const s = add(mul(mul(vv, tc), tc), omt2); // (G1)
      const diff = sub(x, mul(mu, tc));
      if (what === "score") return mul(diff.div(s), -1); // (G5)
      return add(mu, mul(sub(mul(vv, tc), omt).div(s), diff)); // (G4)
    });
  }

  /**
   * Exact class-conditional velocity v_y(x, t) = E[x1 − x0 | x_t = x, k = y] (G4) for
   * component labels `labels` [n].
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { GaussianMixture, tensor } from "../../mod.ts";
   * const v = await GaussianMixture.ring().conditionalVelocity(tensor([[0, 0]]), 0.5, tensor([3])).data();
   * // Mode 3: μ = 2·(cos 3π/4, sin 3π/4). Given the mode, (x1 − x0, x_t) is Gaussian:
   * // E[x1 − x0 | x_t] = μ + (t·v − (1 − t))/s²·(x_t − t·μ), s² = t²·v + (1 − t)², v = 0.02.
   * const t = 0.5, vv = 0.02, s2 = t * t * vv + (1 - t) ** 2, c = (t * vv - (1 - t)) / s2;
   * const mu = [2 * Math.cos(3 * Math.PI / 4), 2 * Math.sin(3 * Math.PI / 4)];
   * mu.forEach((m, i) => assert.ok(Math.abs(v[i]! - (m + c * (0 - t * m))) < 1e-5));
   * ```
   */
  conditionalVelocity(x: Tensor, t: number | Tensor, labels: Tensor): Tensor {
    return this.#conditional(x, t, labels, "velocity");
  }

  /**
   * Exact class-conditional score ∇ log p_t(x | k = y) (G5).
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { GaussianMixture, tensor } from "../../mod.ts";
   * const s = await GaussianMixture.ring().conditionalScore(tensor([[0, 0]]), 0.5, tensor([0])).data();
   * // Mode 0 at (2, 0): x_t ~ N(t·μ, s²I), s² = 0.25·0.02 + 0.25; score −(x − t·μ)/s².
   * const s2 = 0.25 * 0.02 + 0.25;
   * assert.ok(Math.abs(s[0]! - 1 / s2) < 1e-5 && Math.abs(s[1]!) < 1e-6);
   * ```
   */
  conditionalScore(x: Tensor, t: number | Tensor, labels: Tensor): Tensor {
    return this.#conditional(x, t, labels, "score");
  }
}
