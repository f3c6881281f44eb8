/**
 * @file Probability paths and time samplers for conditional flow matching (CFM).
 *
 * Convention (seeds 001, 003): t = 0 is noise, t = 1 is data,
 * x_t = (1 − t)·x0 + t·x1, velocity target x1 − x0.
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import { add, clamp, cos, full, mse, mul, reshape, sigmoid, sin, sub } from "../ops/ops.ts";
import { type Generator, rand, randn } from "../random.ts";
import { checkChoice, checkInt, checkNumber, fmtShape } from "../_util.ts";

/** How training times are drawn. */
export type TimeSchedule = "uniform" | "logit-normal" | "lognormal";

/**
 * The time schedules, for CLIs and validation.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TIME_SCHEDULES } from "../../mod.ts";
 * assert.deepEqual([...TIME_SCHEDULES], ["uniform", "logit-normal", "lognormal"]);
 * ```
 */
export const TIME_SCHEDULES: readonly TimeSchedule[] = ["uniform", "logit-normal", "lognormal"];

/** Options for {@link sampleTimes}. */
export interface SampleTimesOptions {
  /**
   * `"uniform"` (default): t ~ U[0, 1); `"logit-normal"`: t = sigmoid(z), z ~ N(mean, std²);
   * `"lognormal"`: SV's and REPA's `--weighting lognormal` (EDM's σ = exp(N(−1.2, 1.2²)) as in
   * FB's image recipe; in our convention t = sigmoid(N(1.2, 1.2²)), favouring the data end),
   * clipped to [1e-4, 1 − 1e-4] as SV does.
   */
  schedule?: TimeSchedule;
  /** Mean of the logit (default 0; FB's image recipe uses 1.2, which favours the data end). */
  mean?: number;
  /** Standard deviation of the logit (default 1; FB uses 1.2). */
  std?: number;
  /** Clip t to [eps, 1 − eps] (default 0: no clipping). */
  eps?: number;
  /** Random stream (default: the global generator). */
  generator?: Generator;
}

/**
 * Draw `n` training times as a tensor of shape [n].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, randn, sampleTimes } from "../../mod.ts";
 * const t = await sampleTimes(4, { schedule: "logit-normal", mean: 1.2, std: 1.2, generator: new Generator(0) }).data();
 * // t = sigmoid(1.2 + 1.2·z) with z the generator's normals.
 * const z = await randn([4], { generator: new Generator(0) }).data();
 * z.forEach((v, i) => assert.ok(Math.abs(t[i]! - 1 / (1 + Math.exp(-(1.2 + 1.2 * v)))) < 1e-6));
 * ```
 */
export function sampleTimes(n: number, opts: SampleTimesOptions = {}): Tensor {
  checkInt("number of times", n, 1);
  const schedule = checkChoice("time schedule", opts.schedule ?? "uniform", TIME_SCHEDULES);
  const eps = checkNumber("time eps", opts.eps ?? (schedule === "lognormal" ? 1e-4 : 0), 0, 0.5);
  const r = { generator: opts.generator };
  let t: Tensor;
  if (schedule === "uniform") {
    t = rand([n], r);
  } else {
    const sv = schedule === "lognormal";
    // SV: σ = exp(z), z ~ N(−1.2, 1.2²); its time τ = σ/(1+σ) (1 = noise); ours t = 1 − τ =
    // 1/(1+σ) = sigmoid(−z), and −z ~ N(1.2, 1.2²).
    const mean = sv ? 1.2 : checkNumber("logit-normal mean", opts.mean ?? 0);
    const std = sv ? 1.2 : checkNumber("logit-normal std", opts.std ?? 1, 0);
    const z = randn([n], r);
    const zs = mul(z, std);
    const zm = add(zs, mean);
    t = sigmoid(zm);
    z.dispose();
    zs.dispose();
    zm.dispose();
  }
  if (eps === 0) return t;
  const c = clamp(t, eps, 1 - eps);
  t.dispose();
  return c;
}

/**
 * Reshape per-sample times [B] (or a scalar) so they broadcast against x of shape [B, ...].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { broadcastTime, tensor, zeros } from "../../mod.ts";
 * const t = broadcastTime(tensor([0.1, 0.9]), zeros([2, 3, 4]));
 * assert.deepEqual([...t.shape], [2, 1, 1]);
 * assert.deepEqual([...await t.data()], [Math.fround(0.1), Math.fround(0.9)]);
 * ```
 */
export function broadcastTime(t: Tensor, x: Tensor): Tensor {
  if (t.size === 1) return reshape(t, []);
  const b = x.shape[0];
  if (t.size !== b) {
    throw new RangeError(
      `Expected times of shape [${b}] (one per row of x ${fmtShape(x.shape)}) but found ${
        fmtShape(t.shape)
      }`,
    );
  }
  return reshape(t, [b, ...new Array<number>(x.rank - 1).fill(1)]);
}

function checkPair(x0: Tensor, x1: Tensor): void {
  if (x0.shape.length !== x1.shape.length || x0.shape.some((d, i) => d !== x1.shape[i])) {
    throw new RangeError(
      `Expected x0 and x1 to have the same shape but found ${fmtShape(x0.shape)} and ${
        fmtShape(x1.shape)
      }`,
    );
  }
}

/**
 * Interpolation paths x_t = α_t·x1 + σ_t·x0 (t = 0 noise, t = 1 data): `"linear"` (α = t,
 * σ = 1 − t) and `"cosine"` (α = sin(πt/2), σ = cos(πt/2)) — SV's and REPA's
 * `--path-type cosine` (their α = cos(πτ/2) on the data with τ = 1 − t the noise level).
 */
export type PathType = "linear" | "cosine";

/** Every {@linkcode PathType}, for flag validation. */
export const PATH_TYPES: readonly PathType[] = ["linear", "cosine"];

/** α_t, σ_t and their time derivatives of a path, broadcastable against the rows. */
export interface PathCoefficients {
  /** α_t, the weight of the data x1. */
  alpha: Tensor;
  /** σ_t, the weight of the noise x0. */
  sigma: Tensor;
  /** dα/dt. */
  dAlpha: Tensor;
  /** dσ/dt. */
  dSigma: Tensor;
}

/**
 * The coefficients of a path at times `t` (any shape; the results have the same shape).
 *
 * @example
 * ```ts
 * import { pathCoefficients, tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const c = pathCoefficients("cosine", tensor([0.5]));
 * assert.ok(Math.abs((await c.alpha.item()) - Math.SQRT1_2) < 1e-6);
 * ```
 */
export function pathCoefficients(path: PathType, t: Tensor): PathCoefficients {
  checkChoice("path type", path, PATH_TYPES);
  if (path === "linear") {
    return {
      alpha: mul(t, 1),
      sigma: sub(1, t),
      dAlpha: full(t.shape, 1, t.backend),
      dSigma: full(t.shape, -1, t.backend),
    };
  }
  const a = mul(t, Math.PI / 2);
  const sn = sin(a), cs = cos(a);
  a.dispose();
  return { alpha: sn, sigma: cs, dAlpha: mul(cs, Math.PI / 2), dSigma: mul(sn, -Math.PI / 2) };
}

/** Options for {@link interpolate}. */
export interface InterpolateOptions {
  /** Width of the Gaussian tube around the straight path (I-CFM's σ; default 0). */
  sigmaMin?: number;
  /** The ε of the tube (default: drawn from `generator` when sigmaMin > 0). */
  noise?: Tensor;
  /** Random stream for ε. */
  generator?: Generator;
  /** The path (default `"linear"`). */
  path?: PathType;
}

/** A point on a conditional path and its regression target. */
export interface PathSample {
  /** x_t. */
  xt: Tensor;
  /** The conditional velocity u_t(x_t | x0, x1). */
  target: Tensor;
}

/**
 * I-CFM path (TC `ConditionalFlowMatcher`): x_t = (1 − t)·x0 + t·x1 + σ_min·ε, target x1 − x0;
 * with `path: "cosine"`, x_t = α_t·x1 + σ_t·x0 (+ σ_min·ε) and target α̇_t·x1 + σ̇_t·x0 (see
 * {@linkcode PathType}). `t` has shape [B] (or is a scalar tensor).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { interpolate, tensor } from "../../mod.ts";
 * const { xt, target } = interpolate(tensor([[0, 0]]), tensor([[2, 4]]), tensor([0.25]));
 * // x_t = (1 − t)·x0 + t·x1, target x1 − x0
 * assert.deepEqual([...await xt.data()], [0.5, 1]);
 * assert.deepEqual([...await target.data()], [2, 4]);
 * ```
 */
export function interpolate(
  x0: Tensor,
  x1: Tensor,
  t: Tensor,
  opts: InterpolateOptions = {},
): PathSample {
  checkPair(x0, x1);
  const sigma = checkNumber("sigmaMin", opts.sigmaMin ?? 0, 0);
  const path = checkChoice("path type", opts.path ?? "linear", PATH_TYPES);
  const tb = broadcastTime(t, x0);
  let xt: Tensor, d: Tensor;
  if (path === "linear") {
    d = sub(x1, x0);
    // x0 + t·(x1 − x0) is (1 − t)·x0 + t·x1 with one fewer op.
    const td = mul(tb, d);
    xt = add(x0, td);
    td.dispose();
  } else {
    // x_t = α·x1 + σ·x0, u = α̇·x1 + σ̇·x0.
    const c = pathCoefficients(path, tb);
    xt = tidy(() => add(mul(c.alpha, x1), mul(c.sigma, x0)));
    d = tidy(() => add(mul(c.dAlpha, x1), mul(c.dSigma, x0)));
    for (const u of [c.alpha, c.sigma, c.dAlpha, c.dSigma]) u.dispose();
  }
  if (sigma > 0) {
    const eps = opts.noise ?? randn(x0.shape, { generator: opts.generator });
    const se = mul(eps, sigma);
    const xs = add(xt, se);
    se.dispose();
    xt.dispose();
    if (eps !== opts.noise) eps.dispose();
    xt = xs;
  }
  if (tb !== t) tb.dispose();
  return { xt, target: d };
}

/**
 * Lipman et al.'s path (TC `TargetConditionalFlowMatcher`): μ_t = t·x1,
 * σ_t = 1 − (1 − σ_min)·t, x_t = μ_t + σ_t·x0, and
 * u = (x1 − (1 − σ_min)·x_t)/(1 − (1 − σ_min)·t).
 *
 * TC draws a fresh ε and ignores x0; with an N(0, I) source (which this path requires) x0 is
 * that ε. Substituting x_t gives u = x1 − (1 − σ_min)·x0 exactly, which is what is computed
 * (no division, so no blow-up as σ_t → σ_min).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { interpolateLipman, tensor } from "../../mod.ts";
 * const { xt, target } = interpolateLipman(tensor([[1]]), tensor([[3]]), tensor([0.5]), { sigmaMin: 0 });
 * // σ_min = 0: x_t = (1 − t)·x0 + t·x1 = 2, target x1 − x0 = 2
 * assert.deepEqual([...await xt.data()], [2]);
 * assert.deepEqual([...await target.data()], [2]);
 * ```
 */
export function interpolateLipman(
  x0: Tensor,
  x1: Tensor,
  t: Tensor,
  opts: { sigmaMin?: number } = {},
): PathSample {
  checkPair(x0, x1);
  const s = checkNumber("sigmaMin", opts.sigmaMin ?? 1e-5, 0, 1);
  const tb = broadcastTime(t, x0);
  const sigmaT = sub(1, mul(tb, 1 - s));
  const a = mul(tb, x1), b = mul(sigmaT, x0);
  const xt = add(a, b);
  const c = mul(x0, 1 - s);
  const target = sub(x1, c);
  for (const u of [sigmaT, a, b, c]) u.dispose();
  if (tb !== t) tb.dispose();
  return { xt, target };
}

/** Options for {@link cfmLoss}. */
export interface CfmLossOptions {
  /** Source samples (default: N(0, I) drawn from `generator`). */
  x0?: Tensor;
  /** Conditioning passed to the velocity as its third argument (labels, …). */
  y?: Tensor;
  /** Times [B] (default: drawn with `timeSchedule`). */
  t?: Tensor;
  /** Random stream for x0, t and the tube noise. */
  generator?: Generator;
  /** σ_min: the tube width for `"icfm"` (default 0), the final width for `"lipman"` (default 1e-5). */
  sigmaMin?: number;
  /** `"icfm"` (default) or `"lipman"` (TC `TargetConditionalFlowMatcher`). */
  variant?: "icfm" | "lipman";
  /** The `"icfm"` path: `"linear"` (default) or `"cosine"`. */
  path?: PathType;
  /** Time schedule (default uniform) and its logit-normal parameters. */
  timeSchedule?: TimeSchedule;
  /** Logit-normal mean/std and clipping, as in {@link sampleTimes}. */
  timeOptions?: Omit<SampleTimesOptions, "schedule" | "generator">;
  /**
   * A precomputed coupling (`await otCouple(x0, x1, …)`): its x0, x1 and labels replace
   * `x0`, `x1` and `y`. Couplings read the plan back, so they run before `valueAndGrad`.
   */
  coupling?: { x0: Tensor; x1: Tensor; labels?: Tensor };
}

/** The result of {@link cfmLoss}. Tensors other than `loss` belong to the caller. */
export interface CfmLossResult {
  /** Mean squared error between v(x_t, t, y) and the target (a scalar). */
  loss: Tensor;
  /** x_t. */
  xt: Tensor;
  /** t [B]. */
  t: Tensor;
  /** The conditional velocity target. */
  target: Tensor;
}

/** A velocity field: x [B, ...], t [B], optional conditioning -> a tensor shaped like x. */
export type VelocityFn = (x: Tensor, t: Tensor, cond?: Tensor) => Tensor;

/**
 * The conditional flow-matching loss E‖v(x_t, t, y) − u_t‖² for a data batch x1. Synchronous
 * and made of tensor ops, so it runs inside `valueAndGrad` (wrap it, or call it in `f`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { cfmLoss, Generator, randn, valueAndGrad } from "../../mod.ts";
 * const gen = new Generator(0);
 * const w = randn([2, 2], { seed: 1 });
 * const x1 = randn([8, 2], { seed: 2 });
 * const [[loss, { xt, target }], g] = valueAndGrad((p: typeof w) => {
 *   const r = cfmLoss((x) => x.matmul(p), x1, { generator: gen });
 *   return [r.loss, { xt: r.xt, target: r.target }] as [typeof w, { xt: typeof w; target: typeof w }];
 * }, { hasAux: true })(w);
 * // By hand: L = mean((x_t·W − u)²) over 16 entries; ∂L/∂W = (2/16)·x_tᵀ(x_t·W − u).
 * const X = await xt.data(), U = await target.data(), W = await w.data(), G = await g.data();
 * const r = Array.from({ length: 16 }, (_, k) => {
 *   const i = k >> 1, j = k & 1;
 *   return X[2 * i]! * W[j]! + X[2 * i + 1]! * W[2 + j]! - U[k]!;
 * });
 * assert.ok(Math.abs(await loss.item() - r.reduce((s, v) => s + v * v, 0) / 16) < 1e-5);
 * for (let a = 0; a < 2; a++) {
 *   for (let j = 0; j < 2; j++) {
 *     let s = 0;
 *     for (let i = 0; i < 8; i++) s += X[2 * i + a]! * r[2 * i + j]!;
 *     assert.ok(Math.abs(G[2 * a + j]! - s / 8) < 1e-5);
 *   }
 * }
 * ```
 */
export function cfmLoss(
  velocity: VelocityFn,
  x1: Tensor,
  opts: CfmLossOptions = {},
): CfmLossResult {
  if (typeof velocity !== "function") {
    throw new TypeError(`Expected velocity to be a function (x, t, cond?) => Tensor`);
  }
  const variant = checkChoice("CFM variant", opts.variant ?? "icfm", ["icfm", "lipman"] as const);
  const gen = opts.generator;
  let y = opts.y;
  let x0 = opts.x0;
  if (opts.coupling) {
    x0 = opts.coupling.x0;
    x1 = opts.coupling.x1;
    y = opts.coupling.labels ?? y;
  }
  const b = x1.shape[0];
  if (b === undefined) throw new RangeError(`Expected x1 to have a batch axis but found shape []`);
  const ownX0 = x0 === undefined;
  const src = x0 ?? randn(x1.shape, { generator: gen });
  const t = opts.t ??
    sampleTimes(b, { ...opts.timeOptions, schedule: opts.timeSchedule, generator: gen });
  const { xt, target } = variant === "icfm"
    ? interpolate(src, x1, t, { sigmaMin: opts.sigmaMin ?? 0, generator: gen, path: opts.path })
    : interpolateLipman(src, x1, t, { sigmaMin: opts.sigmaMin ?? 1e-5 });
  const v = y === undefined ? velocity(xt, t) : velocity(xt, t, y);
  if (v.shape.length !== xt.shape.length || v.shape.some((d, i) => d !== xt.shape[i])) {
    throw new RangeError(
      `Expected the velocity to return shape ${fmtShape(xt.shape)} but it returned ${
        fmtShape(v.shape)
      }`,
    );
  }
  const loss = mse(v, target);
  if (v !== xt && v !== target) v.dispose();
  if (ownX0) src.dispose();
  return { loss, xt, t, target };
}
