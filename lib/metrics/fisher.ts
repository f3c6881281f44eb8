/**
 * @file Fisher divergence of a learned field against the exact Gaussian-mixture field, and
 * the target-variance curves of SV gmm_exp.py, measured against the exact field instead of
 * SV's 100k-reference STF estimate.
 *
 * Our convention: t = 0 noise, t = 1 data, x_t = (1−t)·x0 + t·x1. SV evaluates at its
 * t_ref ∈ {0.2, 0.3, 0.4, 0.5}, i.e. our t = 1 − t_ref ∈ {0.5, 0.6, 0.7, 0.8}.
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import {
  add,
  full,
  gather,
  matmul,
  maximum,
  mul,
  reshape,
  softmax,
  square,
  sub,
  sum,
  tensor,
} from "../ops/ops.ts";
import { Generator } from "../random.ts";
import { GaussianMixture } from "../data/gmm.ts";
import { FIELD_KINDS, type FieldKind, plainTarget, stfTarget } from "../flow/stablevm.ts";
import { checkChoice, checkInt, checkNumber } from "../_util.ts";

/** A learned field: x [n, d], t [n], labels [n] (numModes = null label) → [n, d]. */
export type LearnedField = (x: Tensor, t: Tensor, y: Tensor) => Tensor;

/** Options for `fisherDivergence`. */
export interface FisherOptions {
  /** Times (ours) to evaluate at. Default [0.5, 0.6, 0.7, 0.8] (SV's 0.5…0.2). */
  times?: readonly number[];
  /** Samples per time. Default 10000. */
  n?: number;
  /** Source of the held-out samples (pass a freshly seeded one for the same set each time). */
  generator: Generator;
  /** Compare velocities (default) or scores. */
  kind?: FieldKind;
  /** Compare against the class-conditional field with the true labels (default: marginal field, null labels). */
  conditional?: boolean;
  /** Rows per model call. Default 2048. */
  batchSize?: number;
}

/** One Fisher-divergence value. */
export interface FisherPoint {
  /** Time (ours). */
  t: number;
  /** E_x ‖f_θ(x, t) − f*(x, t)‖² (summed over dimensions, averaged over samples). */
  value: number;
}

/**
 * The exact field of a mixture's path in a {@linkcode FieldKind} parameterisation: its
 * velocity, its score ∇ log p_t, or −E[x0 | x_t] = (1−t)·∇ log p_t ("noise", SV's "score");
 * class-conditional when `labels` are given.
 *
 * @example
 * ```ts
 * import { exactField, GaussianMixture, tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const gmm = GaussianMixture.ring({ numModes: 4 });
 * const x = tensor([[0.3, -0.2]]);
 * const s = await exactField(gmm, x, 0.6, "score").data();
 * const e = await exactField(gmm, x, 0.6, "noise").data();
 * assert.ok(Math.abs(e[0]! - 0.4 * s[0]!) < 1e-5);
 * ```
 */
export function exactField(
  gmm: GaussianMixture,
  xt: Tensor,
  t: number,
  kind: FieldKind,
  labels?: Tensor,
): Tensor {
  if (kind === "velocity") {
    return labels ? gmm.conditionalVelocity(xt, t, labels) : gmm.velocity(xt, t);
  }
  const score = labels ? gmm.conditionalScore(xt, t, labels) : gmm.score(xt, t);
  return kind === "score" ? score : tidy(() => mul(score, 1 - t));
}

/**
 * Fisher divergence E_{x ~ p_t} ‖f_θ(x, t) − f*(x, t)‖² of `field` against the exact mixture
 * field, at each requested time; x_t is drawn from the mixture path.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fisherDivergence, GaussianMixture, Generator, type Tensor, tensor } from "../../mod.ts";
 * const gmm = GaussianMixture.ring({ numModes: 4 });
 * // The exact field scores 0; the exact field shifted by (1, 0) scores exactly ‖(1, 0)‖² = 1.
 * const exact = (x: Tensor, t: Tensor) => gmm.velocity(x, t);
 * const shifted = (x: Tensor, t: Tensor) => gmm.velocity(x, t).add(tensor([1, 0]));
 * for (const p of await fisherDivergence(exact, gmm, { generator: new Generator(0), n: 64 })) {
 *   assert.ok(p.value < 1e-10);
 * }
 * const fd = await fisherDivergence(shifted, gmm, { generator: new Generator(0), n: 64 });
 * assert.deepEqual(fd.map((p) => p.t), [0.5, 0.6, 0.7, 0.8]);
 * for (const p of fd) assert.ok(Math.abs(p.value - 1) < 1e-5);
 * ```
 */
export async function fisherDivergence(
  field: LearnedField,
  gmm: GaussianMixture,
  opts: FisherOptions,
): Promise<FisherPoint[]> {
  const times = opts.times ?? [0.5, 0.6, 0.7, 0.8];
  const n = checkInt("number of Fisher samples", opts.n ?? 10000, 1);
  const bs = checkInt("Fisher batch size", opts.batchSize ?? 2048, 1);
  const kind = checkChoice("vector field", opts.kind ?? "velocity", FIELD_KINDS);
  const out: FisherPoint[] = [];
  for (const t of times) {
    checkNumber("Fisher time", t, 0, 1);
    let total = 0;
    for (let r0 = 0; r0 < n; r0 += bs) {
      const m = Math.min(bs, n - r0);
      const err = tidy(() => {
        const { x: x1, labels } = gmm.sample(m, opts.generator);
        const x0 = opts.generator.normal([m, gmm.dim]);
        const xt = add(mul(x0, 1 - t), mul(x1, t));
        const exact = exactField(gmm, xt, t, kind, opts.conditional ? labels : undefined);
        const y = opts.conditional ? labels : full([m], gmm.numModes);
        const pred = field(xt, full([m], t), y);
        return sum(square(sub(pred, exact)));
      });
      total += await err.item();
      err.dispose();
    }
    out.push({ t, value: total / n });
  }
  return out;
}

/**
 * The targets whose variance `varianceCurves` measures.
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { VARIANCE_TARGETS } from "../../mod.ts";
 * assert.deepEqual([...VARIANCE_TARGETS], ["cfm", "stf", "stablevm", "cfm-stf"]);
 * ```
 */
export const VARIANCE_TARGETS = ["cfm", "stf", "stablevm", "cfm-stf"] as const;
/** A target name for `varianceCurves`. */
export type VarianceTarget = typeof VARIANCE_TARGETS[number];

/** Options for `varianceCurves`. */
export interface VarianceCurveOptions {
  /** Dimensions of the reference mixtures. Default [10, 100, 500]. */
  dims?: readonly number[];
  /** Number of time values (linspace over [tMin, tMax]). Default 50. */
  numT?: number;
  /** Samples per time. Default 10000. */
  n?: number;
  /** Targets to measure. Default ["cfm", "stablevm"]. */
  targets?: readonly VarianceTarget[];
  /** Bank entries per class for "stablevm". Default 256. */
  bankSize?: number;
  /** Reference-batch size for "stf". Default 2048 (SV gmm_exp.py). */
  refSize?: number;
  /**
   * Reference-set size for "cfm-stf" (SV's plotted curve: ‖CFM target − STF target‖² with the
   * STF target over this many mixture samples, which include the evaluation points).
   * Default 10000 (SV gmm_exp.py).
   */
  pairRefSize?: number;
  /** Mixture modes. Default 100. */
  numModes?: number;
  /** Seed for the mixtures and the draws. Default 0. */
  seed?: number;
  /** Velocity (default) or score targets. */
  kind?: FieldKind;
  /** Time range (ours). Default [0.02, 0.98]. */
  tMin?: number;
  /** Upper end of the time range. */
  tMax?: number;
}

/**
 * Mean, median and 15–85 % band of one target's error at each time: ‖target − exact‖²/√d,
 * or for "cfm-stf" ‖CFM target − STF target‖²/√d.
 */
export interface VarianceCurve {
  /** Mean (what SV plots for "cfm-stf"). */
  mean: number[];
  /** Median. */
  median: number[];
  /** 15 % quantile. */
  q15: number[];
  /** 85 % quantile. */
  q85: number[];
}

/** The curves of one dimension. */
export interface VarianceCurvesForDim {
  /** Dimension d. */
  dim: number;
  /** Times (ours). */
  t: number[];
  /** One curve per requested target. */
  curves: Partial<Record<VarianceTarget, VarianceCurve>>;
}

function quantile(sorted: Float32Array, p: number): number {
  const pos = p * (sorted.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/**
 * Per time, the median and 15–85 % quantiles over samples of ‖target − f*‖²/√d for the
 * CFM target x1 − x0 and the STF target (both against the exact marginal field) and the
 * StableVM target over a class bank of `bankSize` entries (against the exact
 * class-conditional field, which it estimates). As in SV, the regressed sample x1 is itself
 * one of the bank/reference entries. The StableVM target is used at every t here (no split),
 * to show where it helps. "cfm-stf" is the curve SV's gmm_exp.py plots: ‖x1 − x0 − STF
 * target‖²/√d with the STF target over `pairRefSize` mixture samples that include x1 — no
 * exact field involved.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { varianceCurves } from "../../mod.ts";
 * const r = await varianceCurves({ dims: [2], numT: 3, n: 64, bankSize: 16, numModes: 4 });
 * assert.equal(r.length, 1);
 * assert.equal(r[0]!.dim, 2);
 * [0.02, 0.5, 0.98].forEach((t, i) => assert.ok(Math.abs(r[0]!.t[i]! - t) < 1e-12));
 * for (const c of [r[0]!.curves.cfm!, r[0]!.curves.stablevm!]) {
 *   c.median.forEach((m, i) => assert.ok(c.q15[i]! <= m && m <= c.q85[i]!));
 * }
 * ```
 */
export async function varianceCurves(
  opts: VarianceCurveOptions = {},
): Promise<VarianceCurvesForDim[]> {
  const dims = opts.dims ?? [10, 100, 500];
  const numT = checkInt("numT", opts.numT ?? 50, 1);
  const n = checkInt("number of variance samples", opts.n ?? 10000, 2);
  const targets = (opts.targets ?? ["cfm", "stablevm"]).map((s) =>
    checkChoice("variance target", s, VARIANCE_TARGETS)
  );
  const bankSize = checkInt("bank size", opts.bankSize ?? 256, 1);
  const refSize = checkInt("reference batch size", opts.refSize ?? 2048, 1);
  const pairRefSize = checkInt("cfm-stf reference set size", opts.pairRefSize ?? 10000, 1);
  const K = checkInt("number of mixture modes", opts.numModes ?? 100, 1);
  const kind = opts.kind ?? "velocity";
  const tMin = checkNumber("tMin", opts.tMin ?? 0.02, 0, 1);
  const tMax = checkNumber("tMax", opts.tMax ?? 0.98, tMin, 1);
  const seed = opts.seed ?? 0;
  const ts = Array.from(
    { length: numT },
    (_, i) => numT === 1 ? tMin : tMin + ((tMax - tMin) * i) / (numT - 1),
  );
  const result: VarianceCurvesForDim[] = [];
  for (const d of dims) {
    checkInt("variance-curve dim", d, 1);
    const gmm = GaussianMixture.reference({ dim: d, numModes: K, seed });
    const gen = new Generator(seed + 1000 + d);
    const curves: Partial<Record<VarianceTarget, VarianceCurve>> = {};
    for (const name of targets) curves[name] = { mean: [], median: [], q15: [], q85: [] };
    for (const t of ts) {
      for (const name of targets) {
        const errs = await targetErrors(name, gmm, t, n, {
          bankSize,
          refSize: name === "cfm-stf" ? pairRefSize : refSize,
          kind,
          gen,
        });
        errs.sort();
        const c = curves[name]!;
        c.mean.push(errs.reduce((a, e) => a + e, 0) / errs.length);
        c.median.push(quantile(errs, 0.5));
        c.q15.push(quantile(errs, 0.15));
        c.q85.push(quantile(errs, 0.85));
      }
    }
    result.push({ dim: d, t: ts, curves });
  }
  return result;
}

async function targetErrors(
  name: VarianceTarget,
  gmm: GaussianMixture,
  t: number,
  n: number,
  o: { bankSize: number; refSize: number; kind: FieldKind; gen: Generator },
): Promise<Float32Array> {
  const d = gmm.dim, gen = o.gen;
  const exactOf = (xt: Tensor, labels?: Tensor) => exactField(gmm, xt, t, o.kind, labels);
  const errOf = (target: Tensor, exact: Tensor) =>
    mul(sum(square(sub(target, exact)), 1), 1 / Math.sqrt(d));
  if (name === "cfm") {
    const e = tidy(() => {
      const { x: x1 } = gmm.sample(n, gen);
      const x0 = gen.normal([n, d]);
      const xt = add(mul(x0, 1 - t), mul(x1, t));
      const target = plainTarget(x1, x0, t, o.kind);
      return errOf(target, exactOf(xt));
    });
    const out = await e.data();
    e.dispose();
    return out;
  }
  if (name === "cfm-stf") {
    const { x: refs } = gmm.sample(o.refSize, gen);
    const out = new Float32Array(n);
    // Rows in chunks: the STF logits are [rows, refSize].
    for (let r0 = 0; r0 < n; r0 += 1024) {
      const m = Math.min(1024, n - r0);
      const e = tidy(() => {
        const pick = Float32Array.from(gen.uniformHost(m), (u) => Math.floor(u * o.refSize));
        const x1 = gather(refs, tensor(pick));
        const x0 = gen.normal([m, d]);
        const xt = add(mul(x0, 1 - t), mul(x1, t));
        return errOf(plainTarget(x1, x0, t, o.kind), stfTarget(xt, t, refs, o.kind));
      });
      out.set(await e.data(), r0);
      e.dispose();
    }
    refs.dispose();
    return out;
  }
  if (name === "stf") {
    const e = tidy(() => {
      const { x: refs } = gmm.sample(o.refSize, gen);
      const pick = Float32Array.from(gen.uniformHost(n), (u) => Math.floor(u * o.refSize));
      const x1 = gather(refs, tensor(pick));
      const x0 = gen.normal([n, d]);
      const xt = add(mul(x0, 1 - t), mul(x1, t));
      return errOf(stfTarget(xt, t, refs, o.kind), exactOf(xt));
    });
    const out = await e.data();
    e.dispose();
    return out;
  }
  // stablevm: one bank of bankSize entries per class, and each x1 is drawn from its class
  // bank. Rows are grouped by class (padded to the largest group G) so that one batched
  // matmul [K, G, d]·[K, M, d]ᵀ gives every logit (S1) without an [n, M, d] tensor.
  const K = gmm.numModes, M = o.bankSize;
  const { labels } = gmm.sampleHost(n, gen);
  const groups: number[][] = Array.from({ length: K }, () => []);
  labels.forEach((l, i) => groups[l]!.push(i));
  const G = Math.max(...groups.map((g) => g.length));
  const pos = new Float32Array(K * G), inv = new Float32Array(n);
  groups.forEach((g, k) =>
    g.forEach((row, i) => {
      pos[k * G + i] = row;
      inv[row] = k * G + i;
    })
  );
  const pick = Float32Array.from(gen.uniformHost(n), (u, i) => labels[i]! * M + Math.floor(u * M));
  const e = tidy(() => {
    const mu = reshape(tensor(gmm.means, [K, d]), [K, 1, d]);
    const sd = reshape(tensor(Float32Array.from(gmm.variances, Math.sqrt), [K, d]), [K, 1, d]);
    const banks = add(mu, mul(sd, gen.normal([K, M, d]))); // [K, M, d]
    const x1 = gather(reshape(banks, [K * M, d]), tensor(pick));
    const x0 = gen.normal([n, d]);
    const xt = add(mul(x0, 1 - t), mul(x1, t));
    const xg = reshape(gather(xt, tensor(pos)), [K, G, d]);
    // ‖x_t − t b‖² = ‖x_t‖² − 2t x_t·b + t²‖b‖²
    const dist = maximum(
      add(
        sub(sum(square(xg), 2, true), mul(matmul(xg, banks, { transB: true }), 2 * t)),
        mul(reshape(sum(square(banks), 2), [K, 1, M]), t * t),
      ),
      0,
    );
    const w = softmax(maximum(mul(dist, -1 / (2 * (1 - t) * (1 - t))), -1e4), 2);
    const mean1 = gather(reshape(matmul(w, banks), [K * G, d]), tensor(inv)); // E[x1 | x_t]
    const target = o.kind === "velocity"
      ? mul(sub(mean1, xt), 1 / (1 - t)) // (S2)
      : o.kind === "noise"
      ? mul(sub(mul(mean1, t), xt), 1 / (1 - t)) // (S4)
      : mul(sub(mul(mean1, t), xt), 1 / ((1 - t) * (1 - t))); // (S3)
    return errOf(target, exactOf(xt, tensor(Float32Array.from(labels))));
  });
  const out = await e.data();
  e.dispose();
  return out;
}
