/**
 * @file Shortcut models (Frans et al. 2024; SC = kvfrans/shortcut-models `targets_shortcut.py`)
 * with the locality-aware terms of seed 000 (LFM = khoing-ml/shortcut-models@debugv3,
 * `targets_shortcut_LFM_anchor.py`, `targets_shortcut_LFM_local.py`, `train_anchor.py`,
 * `train_local.py`).
 *
 * A shortcut model v(x, t, dtBase, y) is conditioned on its step size d = 2^−dtBase. A batch
 * of B rows holds Bb = ⌊B / bootstrapEvery⌋ bootstrap rows first, then B − Bb flow rows:
 * - bootstrap rows: dtBase = [K−1, …, 0] (K = log2 denoiseTimesteps) each repeated ⌊Bb/K⌋
 *   times, zero-padded to Bb; t = randint(0, 2^dtBase)·d; the target is two half-steps of the
 *   teacher (the EMA network in SC): v1 = T(x_t, t, dtBase + 1), x' = clip(x_t + d/2·v1, ±4),
 *   v2 = T(x', t + d/2, dtBase + 1), target = clip((v1 + v2)/2, ±4), detached;
 * - flow rows: t on the grid {0, 1/T, …, (T−1)/T}, dtBase = K, target x1 − (1 − 1e-5)·x0.
 * Everywhere x_t = (1 − (1 − 1e-5)·t)·x0 + t·x1 (t = 0 noise, t = 1 data).
 *
 * Unlike SC, whose flow rows reuse the first B − Bb images of the batch (so the bootstrap
 * images appear twice), the two groups here take disjoint rows of the batch.
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import {
  add,
  clamp,
  concat,
  div,
  floor,
  full,
  less,
  maximum,
  mean,
  mul,
  sliceRows,
  split,
  sqrt,
  square,
  stopGradient,
  sub,
  sum,
  tensor,
  where,
} from "../ops/mod.ts";
import { type Generator, rand, randint, randn } from "../random.ts";
import { checkInt, checkNumber, fmtShape } from "../_util.ts";
import { broadcastTime } from "./paths.ts";
import { integrate, type IntegrateResult } from "./samplers.ts";
import { classifierFreeGuidance } from "./guidance.ts";

/**
 * SC's σ_min on the source: x_t = (1 − (1 − 1e-5)·t)·x0 + t·x1, target x1 − (1 − 1e-5)·x0.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { SHORTCUT_EPS } from "../../mod.ts";
 * assert.equal(SHORTCUT_EPS, 1e-5);
 * ```
 */
export const SHORTCUT_EPS = 1e-5;

/**
 * A step-conditioned velocity: x [B, ...], t [B], dtBase [B] (d = 2^−dtBase), labels y [B]
 * → a tensor shaped like x.
 */
export type ShortcutVelocityFn = (x: Tensor, t: Tensor, dtBase: Tensor, y?: Tensor) => Tensor;

/** The shortcut-model settings SC's config names `model.*` (defaults as SC's train.py). */
export interface ShortcutConfig {
  /** Discretisation of the flow rows and the finest step, a power of two (default 128). */
  denoiseTimesteps?: number;
  /** One row in `bootstrapEvery` is a bootstrap row (default 8; 0: none, plain flow matching). */
  bootstrapEvery?: number;
  /** Classifier-free guidance inside the bootstrap, on the first ⌊Bb/K⌋ rows (default false). */
  bootstrapCfg?: boolean;
  /** Guidance scale of `bootstrapCfg` (default 4). */
  cfgScale?: number;
  /** Number of real classes: the null label is `numClasses` (needed with labels). */
  numClasses?: number;
  /** Label dropout on the flow rows (default 0; SC uses 0.1), to the null class. */
  classDropoutProb?: number;
  /** Clip of the intermediate point and the target (default 4). */
  clip?: number;
}

/** Options of {@link shortcutTargets}. */
export interface ShortcutTargetsOptions extends ShortcutConfig {
  /** Labels [B] of x1 (bootstrap rows keep theirs; flow rows are dropped out). */
  y?: Tensor;
  /** Source noise for all B rows (default N(0, I) from `generator`). */
  x0?: Tensor;
  /** Random stream for x0, t and label dropout. */
  generator?: Generator;
}

/** A shortcut training batch: bootstrap rows [0, numBootstrap), flow rows after them. */
export interface ShortcutBatch {
  /** Model input x_t [B, ...]. */
  xt: Tensor;
  /** Times [B]. */
  t: Tensor;
  /** log2 of the inverse step size [B] (K on flow rows). */
  dtBase: Tensor;
  /** Regression target [B, ...], detached. */
  target: Tensor;
  /** Labels as the student sees them [B] (dropout applied to flow rows), when labelled. */
  y?: Tensor;
  /** Number of bootstrap rows Bb. */
  numBootstrap: number;
  /** Source noise [B, ...]. */
  x0: Tensor;
  /** Data [B, ...]. */
  x1: Tensor;
}

interface Resolved {
  T: number;
  K: number;
  every: number;
  cfg: boolean;
  scale: number;
  numClasses: number | undefined;
  drop: number;
  clip: number;
}

function resolve(c: ShortcutConfig): Resolved {
  const T = checkInt("denoiseTimesteps", c.denoiseTimesteps ?? 128, 2, 2 ** 20);
  const K = Math.log2(T);
  if (!Number.isInteger(K)) {
    throw new RangeError(`Expected denoiseTimesteps to be a power of two but found ${T}`);
  }
  const numClasses = c.numClasses === undefined
    ? undefined
    : checkInt("numClasses", c.numClasses, 1);
  const drop = checkNumber("classDropoutProb", c.classDropoutProb ?? 0, 0, 1);
  if (drop > 0 && numClasses === undefined) {
    throw new TypeError("classDropoutProb > 0 needs numClasses (the null label)");
  }
  return {
    T,
    K,
    every: checkInt("bootstrapEvery", c.bootstrapEvery ?? 8, 0),
    cfg: c.bootstrapCfg === true,
    scale: checkNumber("cfgScale", c.cfgScale ?? 4),
    numClasses,
    drop,
    clip: checkNumber("clip", c.clip ?? 4, 0),
  };
}

/**
 * The step sizes of the bootstrap rows as SC lays them out: dtBase = K−1, …, 0 (K = log2 of
 * `denoiseTimesteps`), each repeated ⌊Bb/K⌋ times, then zeros up to Bb rows. With Bb < K every
 * row gets dtBase 0 (d = 1), as in SC.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bootstrapDtBase } from "../../mod.ts";
 * assert.deepEqual([...bootstrapDtBase(16, 8)], [2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
 * ```
 */
export function bootstrapDtBase(numBootstrap: number, denoiseTimesteps = 128): Float32Array {
  checkInt("number of bootstrap rows", numBootstrap, 0);
  const { K } = resolve({ denoiseTimesteps });
  const per = Math.floor(numBootstrap / K);
  const out = new Float32Array(numBootstrap);
  for (let k = 0; k < K; k++) out.fill(K - 1 - k, k * per, (k + 1) * per);
  return out;
}

/** x_t = (1 − (1 − ε)·t)·x0 + t·x1 with t [n] broadcast over x. */
function pathPoint(x0: Tensor, x1: Tensor, t: Tensor): Tensor {
  const tb = broadcastTime(t, x0);
  return add(mul(sub(1, mul(tb, 1 - SHORTCUT_EPS)), x0), mul(tb, x1));
}

function checkBatch(x1: Tensor, name: string): number {
  const b = x1.shape[0];
  if (x1.rank < 2 || b === undefined || b < 1) {
    throw new RangeError(`Expected ${name} to have shape [B, ...] but found ${fmtShape(x1.shape)}`);
  }
  return b;
}

function checkRows(x: Tensor | undefined, b: number, name: string): void {
  if (x !== undefined && x.size !== b) {
    throw new RangeError(`Expected ${name} of shape [${b}] but found ${fmtShape(x.shape)}`);
  }
}

/**
 * Build a shortcut training batch from data x1 [B, ...]: bootstrap targets from two half-steps
 * of `teacher` (SC's EMA network; pass the online network for `bootstrap_ema = 0`) and
 * flow-matching targets, laid out as the module doc says. The teacher's outputs are detached
 * (`stopGradient`), so calling this inside a gradient tape does not differentiate through
 * them. With `bootstrapCfg`, the first ⌊Bb/K⌋ bootstrap rows (the smallest steps) use the
 * guided teacher v_u + s·(v_c − v_u), with v_u at the null label `numClasses`.
 * Synchronous tensor ops only: nothing is read back.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, randn, shortcutTargets } from "../../mod.ts";
 * const teacher = (x: ReturnType<typeof randn>) => x.mul(0).add(1); // v ≡ 1
 * const b = shortcutTargets(teacher, randn([16, 2], { seed: 0 }), { generator: new Generator(1) });
 * assert.equal(b.numBootstrap, 2);
 * assert.deepEqual(b.target.shape, [16, 2]);
 * assert.deepEqual([...(await b.target.data()).slice(0, 4)], [1, 1, 1, 1]); // bootstrap rows
 * ```
 */
export function shortcutTargets(
  teacher: ShortcutVelocityFn,
  x1: Tensor,
  opts: ShortcutTargetsOptions = {},
): ShortcutBatch {
  if (typeof teacher !== "function") {
    throw new TypeError("Expected teacher to be a function (x, t, dtBase, y?) => Tensor");
  }
  const r = resolve(opts);
  const B = checkBatch(x1, "x1");
  const { y, generator } = opts;
  checkRows(y, B, "labels y");
  if (opts.x0 && (opts.x0.rank !== x1.rank || opts.x0.shape.some((d, i) => d !== x1.shape[i]))) {
    throw new RangeError(
      `Expected x0 of shape ${fmtShape(x1.shape)} but found ${fmtShape(opts.x0.shape)}`,
    );
  }
  if (r.cfg && (y === undefined || r.numClasses === undefined)) {
    throw new TypeError("bootstrapCfg needs labels y and numClasses (the null label)");
  }
  const Bb = r.every > 0 ? Math.floor(B / r.every) : 0;
  const Bf = B - Bb;
  return tidy(() => {
    const x0 = opts.x0 ?? randn(x1.shape, { generator });
    const rows: { xt: Tensor[]; t: Tensor[]; dt: Tensor[]; target: Tensor[]; y: Tensor[] } = {
      xt: [],
      t: [],
      dt: [],
      target: [],
      y: [],
    };
    if (Bb > 0) {
      const dtHost = bootstrapDtBase(Bb, r.T);
      const sections = dtHost.map((k) => 2 ** k);
      const d = tensor(sections.map((s) => 1 / s), [Bb]);
      const dt = tensor(dtHost, [Bb]);
      const dtTeacher = add(dt, 1);
      // t = randint(0, 2^dtBase)·d: floor(u·2^k) < 2^k since u < 1.
      const t = div(
        floor(mul(rand([Bb], { generator }), tensor(sections, [Bb]))),
        tensor(sections, [Bb]),
      );
      const x0b = sliceRows(x0, 0, Bb), x1b = sliceRows(x1, 0, Bb);
      const xt = pathPoint(x0b, x1b, t);
      const yb = y === undefined ? undefined : sliceRows(y, 0, Bb);
      const nCfg = r.cfg ? Math.floor(Bb / r.K) : 0;
      const call = (x: Tensor, tt: Tensor): Tensor => {
        if (nCfg === 0) return teacher(x, tt, dtTeacher, yb);
        const n = (a: Tensor) => concat([a, sliceRows(a, 0, nCfg)], 0);
        const yy = concat([yb!, full([nCfg], r.numClasses!)], 0);
        const out = teacher(n(x), n(tt), n(dtTeacher), yy);
        const [vAll, vu] = split(out, [Bb, nCfg], 0) as [Tensor, Tensor];
        const vc = sliceRows(vAll, 0, nCfg);
        const guided = add(vu, mul(sub(vc, vu), r.scale));
        return Bb > nCfg ? concat([guided, sliceRows(vAll, nCfg, Bb)], 0) : guided;
      };
      const half = div(d, 2);
      const v1 = stopGradient(call(xt, t));
      const x2 = clamp(add(xt, mul(broadcastTime(half, xt), v1)), -r.clip, r.clip);
      const v2 = stopGradient(call(x2, add(t, half)));
      const target = clamp(mul(add(v1, v2), 0.5), -r.clip, r.clip);
      rows.xt.push(xt);
      rows.t.push(t);
      rows.dt.push(dt);
      rows.target.push(target);
      if (yb) rows.y.push(yb);
    }
    if (Bf > 0) {
      const x0f = sliceRows(x0, Bb, B), x1f = sliceRows(x1, Bb, B);
      const t = div(randint(0, r.T, [Bf], { generator }), r.T);
      rows.xt.push(pathPoint(x0f, x1f, t));
      rows.t.push(t);
      rows.dt.push(full([Bf], r.K));
      rows.target.push(sub(x1f, mul(x0f, 1 - SHORTCUT_EPS)));
      if (y) {
        const yf = sliceRows(y, Bb, B);
        rows.y.push(
          r.drop > 0
            ? where(less(rand([Bf], { generator }), r.drop), full([], r.numClasses!), yf)
            : yf,
        );
      }
    }
    const cat = (xs: Tensor[]) => xs.length === 1 ? xs[0]! : concat(xs, 0);
    return {
      xt: cat(rows.xt),
      t: cat(rows.t),
      dtBase: cat(rows.dt),
      target: stopGradient(cat(rows.target)),
      ...(y ? { y: cat(rows.y) } : {}),
      numBootstrap: Bb,
      x0: opts.x0 ? add(x0, 0) : x0,
      x1: add(x1, 0),
    };
  });
}

/** The anchor term of {@link shortcutLoss} (seed 000's L_anchor, LFM `train_anchor.py`). */
export interface AnchorTerm {
  /** Anchors e(x1) of the flow rows [B − Bb, ...] (class means, or nearest centroids). */
  anchors: Tensor;
  /** 1 where a flow row has a valid anchor [B − Bb] (default: all). */
  valid?: Tensor;
  /** λ (default 1). */
  weight?: number;
}

/** The locality term of {@link shortcutLoss} (seed 000's L_local, LFM `train_local.py`). */
export interface LocalityTerm {
  /** σ_loc: x0' = x0 + σ_loc·ε (default 0.1). */
  noiseScale?: number;
  /** λ (default 1). */
  weight?: number;
  /** ε [B − Bb, ...] (default: drawn from `generator`). */
  noise?: Tensor;
  /** Random stream for ε. */
  generator?: Generator;
}

/** Options of {@link shortcutLoss}. */
export interface ShortcutLossOptions {
  /** Add λ·‖v(x_t, t) − v(e(x1)_t, t)‖² on the flow rows. */
  anchor?: AnchorTerm;
  /** Add λ·‖v(u_t, t) − v(s_t, t)‖² on the flow rows. */
  locality?: LocalityTerm;
}

/** Scalar tensors of {@link shortcutLoss} (the seed's `training/*` metrics). */
export interface ShortcutLossResult {
  /** The total loss to differentiate. */
  loss: Tensor;
  /** MSE on the flow rows (`training/loss_flow`; 0 without flow rows). */
  lossFlow: Tensor;
  /** MSE on the bootstrap rows (`training/loss_bootstrap`; 0 without bootstrap rows). */
  lossBootstrap: Tensor;
  /** RMS of the predicted velocities on the batch (`training/v_magnitude_prime`). */
  vMagnitudePrime: Tensor;
  /** Masked mean of the anchor term (`training/loss_anchor`). */
  lossAnchor?: Tensor;
  /** Fraction of flow rows with a valid anchor (`training/anchor_valid_ratio`). */
  anchorValidRatio?: Tensor;
  /** Mean of the locality term over the flow rows (`training/loss_locality`). */
  lossLocality?: Tensor;
  /** Mean squared difference of the two conditional targets, (1 − 1e-5)²·σ²·E ε² (`training/locality_target_diff`). */
  localityTargetDiff?: Tensor;
}

function rowMse(a: Tensor, b: Tensor): Tensor {
  const axes = Array.from({ length: a.rank - 1 }, (_, i) => i + 1);
  return mean(square(sub(a, b)), axes);
}

/**
 * The shortcut objective on a {@link shortcutTargets} batch: mean over all rows of the squared
 * error (SC: bootstrap and flow rows weigh the same), plus optional locality-aware terms on the
 * flow rows, evaluated in one batched call of `model` on [x_t; e(x1)_t; s_t]:
 * - anchor: e(x1)_t = (1 − (1 − 1e-5)t)·x0 + t·e(x1) with the same x0 and t as the row;
 *   L += λ·Σ valid·‖v(x_t) − v(e(x1)_t)‖²/max(Σ valid, 1) (per-row mean over features), with
 *   gradients through both sides (as LFM's `train_anchor.py`).
 * - locality: x0' = x0 + σ·ε and s_t = (1 − (1 − 1e-5)t)·x0' + t·x1 at the SAME t as
 *   u_t = x_t; L += λ·mean‖v(u_t) − v(s_t)‖², gradients through both sides. v(u_t) is the
 *   row's own prediction (u_t = x_t). Note: LFM's `train_local.py` concatenates the
 *   bootstrap part of u_t/s_t with rows [Bb, B) of the flow pairs and pairs them with the
 *   merged batch's t, so row i > Bb is evaluated at the time of flow row i − Bb, not the one
 *   its s_t was built with; and it folds the term into the per-row loss, i.e. scales it by
 *   (B − Bb)/B. Here each pair shares its t, the term is applied to the flow rows only, and
 *   it is averaged over them.
 * Made of tensor ops: call it inside `valueAndGrad`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, randn, shortcutLoss, shortcutTargets } from "../../mod.ts";
 * const v = (x: ReturnType<typeof randn>) => x.mul(0.5);
 * const b = shortcutTargets(v, randn([16, 2], { seed: 0 }), { generator: new Generator(1) });
 * const r = shortcutLoss(v, b, { locality: { noiseScale: 0.1, generator: new Generator(2) } });
 * assert.ok((await r.loss.item()) > 0);
 * assert.ok((await r.lossLocality!.item()) > 0);
 * ```
 */
export function shortcutLoss(
  model: ShortcutVelocityFn,
  batch: ShortcutBatch,
  opts: ShortcutLossOptions = {},
): ShortcutLossResult {
  if (typeof model !== "function") {
    throw new TypeError("Expected model to be a function (x, t, dtBase, y?) => Tensor");
  }
  const { xt, t, dtBase, target, y, numBootstrap: Bb } = batch;
  const B = checkBatch(xt, "batch.xt"), Bf = B - Bb;
  const { anchor, locality } = opts;
  if ((anchor || locality) && Bf === 0) {
    throw new RangeError("The anchor and locality terms need flow rows (bootstrapEvery ≠ 1)");
  }
  const lamA = anchor ? checkNumber("anchor weight", anchor.weight ?? 1, 0) : 0;
  const lamL = locality ? checkNumber("locality weight", locality.weight ?? 1, 0) : 0;
  const sigma = locality ? checkNumber("locality noise scale", locality.noiseScale ?? 0.1, 0) : 0;
  const flowShape = [Bf, ...xt.shape.slice(1)];
  const checkFlow = (x: Tensor | undefined, name: string) => {
    if (x && (x.rank !== flowShape.length || x.shape.some((d, i) => d !== flowShape[i]))) {
      throw new RangeError(
        `Expected ${name} of shape ${fmtShape(flowShape)} (the flow rows) but found ${
          fmtShape(x.shape)
        }`,
      );
    }
  };
  checkFlow(anchor?.anchors, "anchors");
  checkFlow(locality?.noise, "locality noise");
  checkRows(anchor?.valid, Bf, "anchor valid mask");
  return tidy(() => {
    const sliceF = (a: Tensor) => sliceRows(a, Bb, B);
    const tF = sliceF(t);
    const xs = [xt], ts = [t], ds = [dtBase], ys = y ? [y] : [];
    const extra = (x: Tensor) => {
      xs.push(x);
      ts.push(tF);
      ds.push(sliceF(dtBase));
      if (y) ys.push(sliceF(y));
    };
    const x0F = sliceF(batch.x0), x1F = sliceF(batch.x1);
    if (anchor) extra(pathPoint(x0F, anchor.anchors, tF));
    let x0p: Tensor | undefined;
    if (locality) {
      const eps = locality.noise ?? randn(flowShape, { generator: locality.generator });
      x0p = add(x0F, mul(eps, sigma));
      // s_t is built with the flow rows' own t (tF), the t that u_t = x_t was built with.
      extra(pathPoint(x0p, x1F, tF));
    }
    const c = (a: Tensor[]) => a.length === 1 ? a[0]! : concat(a, 0);
    const out = model(c(xs), c(ts), c(ds), y ? c(ys) : undefined);
    const sizes = [B, ...xs.slice(1).map(() => Bf)];
    const [v, ...rest] = xs.length === 1 ? [out] : split(out, sizes, 0);
    if (v!.rank !== xt.rank || v!.shape.some((d, i) => d !== xt.shape[i])) {
      throw new RangeError(
        `Expected the model to return shape ${fmtShape(xt.shape)} but it returned ${
          fmtShape(v!.shape)
        }`,
      );
    }
    const per = rowMse(v!, target);
    let loss = mean(per);
    const zero = () => full([], 0);
    const res: ShortcutLossResult = {
      loss,
      lossFlow: Bf > 0 ? mean(sliceF(per)) : zero(),
      lossBootstrap: Bb > 0 ? mean(sliceRows(per, 0, Bb)) : zero(),
      vMagnitudePrime: sqrt(mean(square(v!))),
    };
    const vF = sliceF(v!);
    let k = 0;
    if (anchor) {
      const a = rowMse(vF, rest[k++]!);
      const valid = anchor.valid ?? full([Bf], 1);
      res.lossAnchor = div(sum(mul(a, valid)), maximum(sum(valid), 1));
      res.anchorValidRatio = mean(valid);
      loss = add(loss, mul(res.lossAnchor, lamA));
    }
    if (locality) {
      res.lossLocality = mean(rowMse(vF, rest[k++]!));
      // Targets x1 − (1 − ε)x0 and x1 − (1 − ε)x0' differ by (1 − ε)(x0' − x0).
      res.localityTargetDiff = mean(square(mul(sub(x0p!, x0F), 1 - SHORTCUT_EPS)));
      loss = add(loss, mul(res.lossLocality, lamL));
    }
    res.loss = loss;
    return res;
  });
}

/**
 * dtBase = log2 N for N-step shortcut sampling (d = 1/N). Throws a `RangeError` unless N is a
 * power of two no larger than `denoiseTimesteps` (the step sizes the model was trained on).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { shortcutDtBase } from "../../mod.ts";
 * assert.equal(shortcutDtBase(8), 3);
 * assert.throws(() => shortcutDtBase(6), RangeError);
 * ```
 */
export function shortcutDtBase(numSteps: number, denoiseTimesteps = 128): number {
  const { T } = resolve({ denoiseTimesteps });
  const n = checkInt("number of steps", numSteps, 1);
  const k = Math.log2(n);
  if (!Number.isInteger(k) || n > T) {
    throw new RangeError(
      `Expected the number of steps of a shortcut model to be a power of two in [1, ${T}] ` +
        `(it is trained for d = 2^−k only) but found ${numSteps}`,
    );
  }
  return k;
}

/** Options of {@link shortcutSample}. */
export interface ShortcutSampleOptions {
  /** Labels [B] (with `cfgScale`, the guided velocity is used). */
  y?: Tensor;
  /** Guidance scale s: v_u + s·(v_c − v_u) with v_u at the null label (default: none). */
  cfgScale?: number;
  /** Null label for guidance (the model's `numClasses`). */
  nullLabel?: number;
  /** Largest step count the model was trained for (default 128). */
  denoiseTimesteps?: number;
  /** Keep every state (for straightness). */
  record?: boolean;
}

/**
 * Few-step sampling of a shortcut model (SC): N Euler steps of size d = 1/N from t = 0 (noise)
 * to 1, each with the model conditioned on dtBase = log2 N. N must be a power of two
 * ≤ `denoiseTimesteps` (a `RangeError` otherwise; see {@link shortcutDtBase}).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randn, shortcutSample } from "../../mod.ts";
 * const v = (x: ReturnType<typeof randn>, _t: unknown, d: ReturnType<typeof randn>) =>
 *   x.mul(0).add(d.reshape([-1, 1])); // v = dtBase
 * const r = await shortcutSample(v, randn([3, 2], { seed: 0 }).mul(0), 4);
 * assert.deepEqual([...await r.x.data()], [2, 2, 2, 2, 2, 2]); // 4 steps of 1/4 at v = log2 4
 * assert.equal(r.nfe, 4);
 * ```
 */
export async function shortcutSample(
  velocity: ShortcutVelocityFn,
  x0: Tensor,
  numSteps: number,
  opts: ShortcutSampleOptions = {},
): Promise<IntegrateResult> {
  if (typeof velocity !== "function") {
    throw new TypeError("Expected velocity to be a function (x, t, dtBase, y?) => Tensor");
  }
  const k = shortcutDtBase(numSteps, opts.denoiseTimesteps ?? 128);
  const b = checkBatch(x0, "x0");
  checkRows(opts.y, b, "labels y");
  const dt = full([b], k);
  let v = (x: Tensor, t: Tensor, y?: Tensor) => {
    // Guidance evaluates [x; x]: give it as many dtBase rows as x has.
    const d = x.shape[0] === b ? dt : full([x.shape[0]!], k);
    return velocity(x, t, d, y);
  };
  if (opts.cfgScale !== undefined && opts.y !== undefined) {
    if (opts.nullLabel === undefined) {
      throw new TypeError("cfgScale needs nullLabel (the model's numClasses)");
    }
    v = classifierFreeGuidance(v, { scale: opts.cfgScale, nullLabel: opts.nullLabel });
  }
  try {
    return await integrate(v, x0, {
      method: "euler",
      steps: numSteps,
      cond: opts.y,
      record: opts.record,
    });
  } finally {
    dt.dispose();
  }
}
