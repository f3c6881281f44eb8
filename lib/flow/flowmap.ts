/**
 * @file Flow maps learned by self-distillation (Boffi et al. 2025, "How to build a consistency
 * model"): the parameterisation X_{s,t}(x) = x + (t − s)·φ(s, t, x), the diagonal (tangent)
 * loss, the Lagrangian (LSD), progressive (PSD) and Eulerian (ESD) self-distillation losses,
 * and N-step sampling by composing the map on a uniform grid. Written against Tensor ops and
 * the autodiff (forward-mode `jvp` inside `valueAndGrad`), so it runs on both backends.
 *
 * Convention (seed 004): t = 0 is noise, t = 1 is data; the interpolant is
 * I_t = (1 − t)·x0 + t·x1 with İ_t = x1 − x0, and b_t = φ(t, t, ·) is the velocity.
 * Every teacher is evaluated with the current parameters and detached (stopGradient): no
 * gradient flows through a teacher (the unofficial reproduction let it flow, a bug).
 * @module
 */
import { Tensor, tidy } from "../tensor.ts";
import {
  add,
  full,
  maximum,
  mean,
  minimum,
  mse,
  mul,
  onesLike,
  reshape,
  sliceRows,
  square,
  stopGradient,
  sub,
} from "../ops/ops.ts";
import { jvp } from "../autodiff/mod.ts";
import { Generator } from "../random.ts";
import { checkChoice, checkInt, checkNumber, fmtShape } from "../_util.ts";
import type { IntegrateResult } from "./samplers.ts";

/**
 * A flow-map network φ(s, t, x): x [B, ...], s [B], t [B] → [B, ...] (the shape of x). The map
 * itself is X_{s,t}(x) = x + (t − s)·φ (see {@link flowMapApply}).
 */
export type FlowMapFn = (x: Tensor, s: Tensor, t: Tensor) => Tensor;

/** Self-distillation objectives for the off-diagonal rows. */
export type FlowMapMethod = "lsd" | "psd" | "esd";

/**
 * The self-distillation methods, for CLIs and validation.
 *
 * @example
 * ```ts
 * import { FLOWMAP_METHODS } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * assert.deepEqual([...FLOWMAP_METHODS], ["lsd", "psd", "esd"]);
 * ```
 */
export const FLOWMAP_METHODS: readonly FlowMapMethod[] = ["lsd", "psd", "esd"];

/** How PSD splits [s, t] at an intermediate time u. */
export type PsdMode = "midpoint" | "uniform";

/**
 * The PSD split modes, for CLIs and validation.
 *
 * @example
 * ```ts
 * import { PSD_MODES } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * assert.deepEqual([...PSD_MODES], ["midpoint", "uniform"]);
 * ```
 */
export const PSD_MODES: readonly PsdMode[] = ["midpoint", "uniform"];

/** Per-row times [B] as [B, 1, …] so they broadcast against x [B, …]. */
function col(t: Tensor, x: Tensor): Tensor {
  if (t.size !== x.shape[0]) {
    throw new RangeError(
      `Expected times of shape [${x.shape[0]}] (one per row of x ${fmtShape(x.shape)}) but found ${
        fmtShape(t.shape)
      }`,
    );
  }
  return reshape(t, [t.size, ...new Array<number>(x.rank - 1).fill(1)]);
}

function checkFn(phi: unknown, name = "phi"): void {
  if (typeof phi !== "function") {
    throw new TypeError(`Expected ${name} to be a flow-map function (x, s, t) => Tensor`);
  }
}

function checkLike(name: string, a: Tensor, x: Tensor): Tensor {
  if (!(a instanceof Tensor) || a.rank !== x.rank || a.shape.some((d, i) => d !== x.shape[i])) {
    throw new RangeError(
      `Expected ${name} to have the shape of x ${fmtShape(x.shape)} but found ${
        a instanceof Tensor ? fmtShape(a.shape) : typeof a
      }`,
    );
  }
  return a;
}

/**
 * The flow map X_{s,t}(x) = x + (t − s)·φ(s, t, x). X_{t,t} is the identity and
 * ∂_t X_{s,t}|_{t=s} = φ(s, s, ·) = b_s, the velocity.
 *
 * @example
 * ```ts
 * import { flowMapApply, tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const phi = (x: ReturnType<typeof tensor>) => x.mul(2); // φ = 2x
 * const X = flowMapApply(phi, tensor([[1, -1]]), tensor([0.25]), tensor([0.75]));
 * assert.deepEqual([...await X.data()], [2, -2]); // x + 0.5·2x
 * ```
 */
export function flowMapApply(phi: FlowMapFn, x: Tensor, s: Tensor, t: Tensor): Tensor {
  checkFn(phi);
  const out = checkLike("phi's output", phi(x, s, t), x);
  return add(x, mul(col(sub(t, s), x), out));
}

/** A detached teacher made from a student: stopGradient(φ(stopGradient(x), s, t)). */
function detachedOf(phi: FlowMapFn): FlowMapFn {
  return (x, s, t) => stopGradient(phi(stopGradient(x), s, t));
}

/** A teacher's output, detached whatever function produced it. */
function teach(teacher: FlowMapFn, x: Tensor, s: Tensor, t: Tensor): Tensor {
  return stopGradient(checkLike("the teacher's output", teacher(stopGradient(x), s, t), x));
}

function interp(x0: Tensor, x1: Tensor, t: Tensor): Tensor {
  // I_t = x0 + t·(x1 − x0) = (1 − t)·x0 + t·x1
  return add(x0, mul(col(t, x0), sub(x1, x0)));
}

function checkPair(x0: Tensor, x1: Tensor): void {
  if (!(x0 instanceof Tensor) || !(x1 instanceof Tensor) || x0.rank < 2) {
    throw new TypeError("Expected x0 and x1 to be tensors with a batch axis [B, ...]");
  }
  checkLike("x1", x1, x0);
}

/**
 * The diagonal (tangent) loss: mean over rows and coordinates of (φ(t, t, I_t) − İ_t)², with
 * I_t = (1 − t)·x0 + t·x1 and İ_t = x1 − x0 (PyTorch's `F.mse_loss`, as the reproduction). Its
 * minimiser is b_t = E[İ_t | I_t], the flow-matching velocity.
 *
 * @example
 * ```ts
 * import { flowMapDiagonalLoss, tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const x0 = tensor([[0, 0]]), x1 = tensor([[1, 3]]);
 * const exact = (x: ReturnType<typeof tensor>) => x.mul(0).add(tensor([[1, 3]]));
 * assert.equal(await flowMapDiagonalLoss(exact, x0, x1, tensor([0.3])).item(), 0);
 * ```
 */
export function flowMapDiagonalLoss(phi: FlowMapFn, x0: Tensor, x1: Tensor, t: Tensor): Tensor {
  checkFn(phi);
  checkPair(x0, x1);
  return tidy(() => mse(checkLike("phi's output", phi(interp(x0, x1, t), t, t), x0), sub(x1, x0)));
}

/** Options shared by the self-distillation losses. */
export interface SelfDistillOptions {
  /**
   * The teacher network, evaluated with the current parameters (default: the student itself).
   * Its output is always detached; passing a function whose weights are already detached
   * (e.g. `FlowMapMLP.teacher`) only saves recording its forward pass on the tape.
   */
  teacher?: FlowMapFn;
}

/**
 * Lagrangian self-distillation: mean of (∂_t X_{s,t}(I_s) − sg[b_t(sg X_{s,t}(I_s))])², where
 * b_t = φ(t, t, ·) is the teacher's velocity. ∂_t X is exact: forward mode (`jvp` over t with
 * tangent 1) of X_{s,t} = x + (t − s)·φ(s, t, x), i.e. φ + (t − s)·∂_tφ. Differentiable with
 * `valueAndGrad`; no gradient flows through the teacher.
 *
 * @example
 * ```ts
 * import { lsdLoss, tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * // A constant velocity c has the flow map x + (t − s)·c, i.e. φ = c: the loss is 0.
 * const c = tensor([[1, -2]]);
 * const phi = (x: ReturnType<typeof tensor>) => x.mul(0).add(c);
 * const l = lsdLoss(phi, tensor([[0.5, 0.5]]), tensor([[1, 1]]), tensor([0.2]), tensor([0.9]));
 * assert.equal(await l.item(), 0);
 * ```
 */
export function lsdLoss(
  phi: FlowMapFn,
  x0: Tensor,
  x1: Tensor,
  s: Tensor,
  t: Tensor,
  opts: SelfDistillOptions = {},
): Tensor {
  checkFn(phi);
  checkPair(x0, x1);
  const teacher = opts.teacher ?? detachedOf(phi);
  checkFn(teacher, "teacher");
  return tidy(() => {
    const xs = interp(x0, x1, s);
    const [X, dXdt] = jvp((tt: Tensor) => flowMapApply(phi, xs, s, tt), [t], [onesLike(t)]);
    return mse(dXdt, teach(teacher, X, t, t));
  });
}

/** Options of {@link psdLoss}. */
export interface PsdLossOptions extends SelfDistillOptions {
  /** `"midpoint"` (default): u = (s + t)/2; `"uniform"`: u = h·s + (1 − h)·t, h ~ U[0, 1). */
  mode?: PsdMode;
  /** The uniform mode's h [B] (default: drawn from `generator`). */
  h?: Tensor;
  /** Random stream for h. */
  generator?: Generator;
}

/**
 * Progressive self-distillation, with the loss on φ (as Boffi's code): mean of
 * (φ(s, t, I_s) − sg[(1 − h)·φ(s, u, I_s) + h·φ(u, t, X_{s,u}(I_s))])² with u = h·s + (1 − h)·t
 * (midpoint: h = ½). The teacher is the map of the two half jumps,
 * X_{u,t}(X_{s,u}(x)) = x + (t − s)·teacher, so this is the semigroup residual divided by (t − s).
 *
 * @example
 * ```ts
 * import { psdLoss, tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const c = tensor([[2, 0]]);
 * const phi = (x: ReturnType<typeof tensor>) => x.mul(0).add(c); // exact for velocity c
 * const l = psdLoss(phi, tensor([[0, 1]]), tensor([[1, 1]]), tensor([0.1]), tensor([0.7]));
 * assert.equal(await l.item(), 0);
 * ```
 */
export function psdLoss(
  phi: FlowMapFn,
  x0: Tensor,
  x1: Tensor,
  s: Tensor,
  t: Tensor,
  opts: PsdLossOptions = {},
): Tensor {
  checkFn(phi);
  checkPair(x0, x1);
  const mode = checkChoice("PSD mode", opts.mode ?? "midpoint", PSD_MODES);
  const teacher = opts.teacher ?? detachedOf(phi);
  checkFn(teacher, "teacher");
  return tidy(() => {
    const B = x0.shape[0]!;
    const h = mode === "midpoint"
      ? null
      : opts.h ?? (opts.generator ?? new Generator(0)).uniform([B]);
    if (h && h.size !== B) {
      throw new RangeError(`Expected PSD h of shape [${B}] but found ${fmtShape(h.shape)}`);
    }
    // u = h·s + (1 − h)·t = t + h·(s − t)
    const u = h ? add(t, mul(h, sub(s, t))) : mul(add(s, t), 0.5);
    const xs = interp(x0, x1, s);
    const student = checkLike("phi's output", phi(xs, s, t), x0);
    const phiSu = teach(teacher, xs, s, u);
    const xsu = add(xs, mul(col(sub(u, s), xs), phiSu));
    const phiUt = teach(teacher, xsu, u, t);
    const target = h
      ? add(mul(phiSu, col(sub(1, h), xs)), mul(phiUt, col(h, xs)))
      : mul(add(phiSu, phiUt), 0.5);
    return mse(student, target);
  });
}

/**
 * Eulerian self-distillation: mean of (∂_s X_{s,t}(I_s) + ∇_x X_{s,t}(I_s)·sg[b_s(I_s)])². Both
 * terms come from one `jvp` of (x, s) ↦ X_{s,t}(x) with tangents (b_s, 1). The teacher velocity
 * is detached; gradients flow through ∂_s X and the Jacobian term (Boffi's "convex" stopgrad).
 *
 * @example
 * ```ts
 * import { esdLoss, tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const c = tensor([[1, 1]]);
 * const phi = (x: ReturnType<typeof tensor>) => x.mul(0).add(c);
 * const l = esdLoss(phi, tensor([[0, 0]]), tensor([[1, 2]]), tensor([0]), tensor([1]));
 * assert.equal(await l.item(), 0); // ∂_s X = −c, ∇X·b = c
 * ```
 */
export function esdLoss(
  phi: FlowMapFn,
  x0: Tensor,
  x1: Tensor,
  s: Tensor,
  t: Tensor,
  opts: SelfDistillOptions = {},
): Tensor {
  checkFn(phi);
  checkPair(x0, x1);
  const teacher = opts.teacher ?? detachedOf(phi);
  checkFn(teacher, "teacher");
  return tidy(() => {
    const xs = interp(x0, x1, s);
    const b = teach(teacher, xs, s, s);
    const [, d] = jvp(
      (xx: Tensor, ss: Tensor) => flowMapApply(phi, xx, ss, t),
      [xs, s],
      [b, onesLike(s)],
    );
    return mean(square(d));
  });
}

/** Times of the off-diagonal rows. */
export interface FlowMapTimes {
  /** Start times [n]. */
  s: Tensor;
  /** End times [n], t ≥ s. */
  t: Tensor;
}

/**
 * (s, t) = (min, max) of two U[0, 1) draws per row (the reference's sampling of the upper
 * triangle: density 2 on s ≤ t).
 *
 * @example
 * ```ts
 * import { Generator, sampleFlowMapTimes } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const { s, t } = sampleFlowMapTimes(64, { generator: new Generator(0) });
 * const sv = await s.data(), tv = await t.data();
 * assert.ok(sv.every((v, i) => v <= tv[i]! && v >= 0 && tv[i]! < 1));
 * ```
 */
export function sampleFlowMapTimes(
  n: number,
  opts: { generator?: Generator } = {},
): FlowMapTimes {
  checkInt("number of times", n, 1);
  const g = opts.generator ?? new Generator(0);
  const a = g.uniform([n]), b = g.uniform([n]);
  const s = minimum(a, b), t = maximum(a, b);
  a.dispose();
  b.dispose();
  return { s, t };
}

/** Options of {@link flowMapLoss}. */
export interface FlowMapLossOptions extends SelfDistillOptions {
  /** Off-diagonal objective (default `"lsd"`). */
  method?: FlowMapMethod;
  /** PSD split (default `"midpoint"`). */
  psdMode?: PsdMode;
  /** Rows of the batch given the diagonal loss (default: `diagonalFraction` of the batch). */
  diagonalRows?: number;
  /** Fraction of the rows given the diagonal loss, in [0, 1] (default 0.75: 1536 of 2048). */
  diagonalFraction?: number;
  /** Weight of the off-diagonal term (default 1: diagonal mse + off-diagonal mse, as seed 004). */
  offDiagonalWeight?: number;
  /** Source noise x0 [B, ...] (default: N(0, I) from `generator`). */
  x0?: Tensor;
  /** Random stream for noise and times. */
  generator?: Generator;
}

/** The parts of {@link flowMapLoss}. */
export interface FlowMapLossResult {
  /** diagonal + offDiagonalWeight·offDiagonal (a scalar). */
  loss: Tensor;
  /** The diagonal (tangent) term, or null when there are no diagonal rows. */
  diagonal: Tensor | null;
  /** The self-distillation term, or null when there are no off-diagonal rows. */
  offDiagonal: Tensor | null;
}

/**
 * Resolve the diagonal row count of a batch of `batch` rows from `diagonalRows` or
 * `diagonalFraction` (rounded); bad values raise a `RangeError` naming them.
 *
 * @example
 * ```ts
 * import { diagonalRowCount } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * assert.equal(diagonalRowCount(2048, { diagonalFraction: 0.75 }), 1536);
 * assert.throws(() => diagonalRowCount(8, { diagonalFraction: 1.5 }), /1\.5/);
 * ```
 */
export function diagonalRowCount(
  batch: number,
  o: { diagonalRows?: number; diagonalFraction?: number } = {},
): number {
  checkInt("batch size", batch, 1);
  if (o.diagonalRows !== undefined) return checkInt("diagonal rows", o.diagonalRows, 0, batch);
  const f = checkNumber("diagonal fraction", o.diagonalFraction ?? 0.75, 0, 1);
  return Math.round(f * batch);
}

/**
 * The flow-map training objective on a batch of data x1 [B, ...]: the first rows get the
 * diagonal loss at t ~ U[0, 1), the rest the chosen self-distillation loss at
 * (s, t) = (min, max) of two uniform draws; the result is diagonal + w·offDiagonal.
 * Call it inside `valueAndGrad`.
 *
 * @example
 * ```ts
 * import { flowMapLoss, Generator, nn, randn, valueAndGrad } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const net = new nn.FlowMapMLP({ dim: 2, hidden: 16, depth: 2, seed: 0 });
 * const x1 = randn([8, 2], { seed: 1 }), g = new Generator(2);
 * const [loss, grads] = valueAndGrad((_p: ReturnType<typeof randn>[]) =>
 *   flowMapLoss((x, s, t) => net.forward(x, s, t), x1, { method: "lsd", diagonalRows: 6, generator: g }).loss
 * )(net.parameters());
 * assert.ok(await loss.item() > 0 && grads.length === net.parameters().length);
 * ```
 */
export function flowMapLoss(
  phi: FlowMapFn,
  x1: Tensor,
  opts: FlowMapLossOptions = {},
): FlowMapLossResult {
  checkFn(phi);
  if (!(x1 instanceof Tensor) || x1.rank < 2) {
    throw new TypeError("Expected x1 to be a tensor with a batch axis [B, ...]");
  }
  const method = checkChoice("flow-map method", opts.method ?? "lsd", FLOWMAP_METHODS);
  const psdMode = checkChoice("PSD mode", opts.psdMode ?? "midpoint", PSD_MODES);
  const w = checkNumber("off-diagonal weight", opts.offDiagonalWeight ?? 1, 0);
  const B = x1.shape[0]!;
  const nd = diagonalRowCount(B, opts);
  const g = opts.generator ?? new Generator(0);
  const x0 = opts.x0 ? checkLike("x0", opts.x0, x1) : g.normal(x1.shape);
  try {
    const [diagonal, offDiagonal] = tidy(() => {
      let d: Tensor | null = null, o: Tensor | null = null;
      if (nd > 0) {
        const t = g.uniform([nd]);
        d = flowMapDiagonalLoss(phi, sliceRows(x0, 0, nd), sliceRows(x1, 0, nd), t);
      }
      if (nd < B) {
        const { s, t } = sampleFlowMapTimes(B - nd, { generator: g });
        const a = sliceRows(x0, nd, B), b = sliceRows(x1, nd, B);
        const so = { teacher: opts.teacher };
        o = method === "lsd"
          ? lsdLoss(phi, a, b, s, t, so)
          : method === "esd"
          ? esdLoss(phi, a, b, s, t, so)
          : psdLoss(phi, a, b, s, t, { ...so, mode: psdMode, generator: g });
      }
      return [d, o] as const;
    });
    const loss = diagonal && offDiagonal
      ? add(diagonal, mul(offDiagonal, w))
      : diagonal
      ? add(diagonal, 0)
      : mul(offDiagonal!, w);
    return { loss, diagonal, offDiagonal };
  } finally {
    if (x0 !== opts.x0) x0.dispose();
  }
}

/** Options of {@link sampleFlowMap}. */
export interface FlowMapSampleOptions {
  /** Map evaluations N on the uniform grid t_k = t0 + k·(t1 − t0)/N (default 1: one step). */
  steps?: number;
  /** Start time (default 0: noise). */
  t0?: number;
  /** End time (default 1: data). */
  t1?: number;
  /** Keep x at every grid time in `trajectory` (default false). */
  record?: boolean;
}

/**
 * Sample by composing the flow map: x_{k+1} = X_{t_k, t_{k+1}}(x_k) on a uniform grid of N
 * steps (N = 1 is the one-step map X_{0,1}). Returns the same record as `integrate`, with
 * `nfe` = N network evaluations; the caller owns `x` and the trajectory.
 *
 * @example
 * ```ts
 * import { sampleFlowMap, tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const phi = (x: ReturnType<typeof tensor>) => x.mul(0).add(1); // velocity 1
 * const r = await sampleFlowMap(phi, tensor([[0], [2]]), { steps: 4 });
 * assert.deepEqual([...await r.x.data()], [1, 3]);
 * assert.equal(r.nfe, 4);
 * ```
 */
export function sampleFlowMap(
  phi: FlowMapFn,
  x0: Tensor,
  opts: FlowMapSampleOptions = {},
): Promise<IntegrateResult> {
  // Errors reject the promise, as `integrate`'s do.
  try {
    return Promise.resolve(composeFlowMap(phi, x0, opts));
  } catch (e) {
    return Promise.reject(e);
  }
}

function composeFlowMap(phi: FlowMapFn, x0: Tensor, opts: FlowMapSampleOptions): IntegrateResult {
  checkFn(phi);
  if (!(x0 instanceof Tensor) || x0.rank < 1) {
    throw new RangeError("Expected x0 to be a tensor with a batch axis [B, ...]");
  }
  const steps = checkInt("flow-map steps N", opts.steps ?? 1, 1);
  const t0 = checkNumber("t0", opts.t0 ?? 0), t1 = checkNumber("t1", opts.t1 ?? 1);
  const B = x0.shape[0]!;
  const record = opts.record ?? false;
  const times = Array.from(
    { length: steps + 1 },
    (_, k) => k === steps ? t1 : t0 + (k * (t1 - t0)) / steps,
  );
  const traj: Tensor[] | undefined = record ? [add(x0, 0)] : undefined;
  let x = x0;
  for (let k = 0; k < steps; k++) {
    const xn = tidy(() =>
      flowMapApply(phi, x, full([B], times[k]!, x0.backend), full([B], times[k + 1]!, x0.backend))
    );
    if (x !== x0 && !record) x.dispose();
    x = xn;
    traj?.push(xn);
  }
  const res: IntegrateResult = { x: traj ? add(x, 0) : x, nfe: steps, times };
  if (traj) res.trajectory = traj;
  return res;
}

/** Options of {@link flowMapSamples}. */
export interface FlowMapSamplesOptions {
  /** Shape of one sample (default [2]). */
  shape?: readonly number[];
  /** Map evaluations N (default 1). */
  steps?: number;
  /** Seed of the N(0, I) source noise (default 0); the same seed gives the same noise for every N. */
  seed?: number;
  /** Rows per batch (default 16384). */
  batch?: number;
}

/**
 * Draw `n` samples with N map evaluations from N(0, I) noise, in batches, and return them on
 * the host (n × prod(shape) values).
 *
 * @example
 * ```ts
 * import { flowMapSamples, type Tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const shift = (x: Tensor) => x.mul(0).add(10);
 * const x = await flowMapSamples(shift, 5, { steps: 2, batch: 2 });
 * assert.equal(x.length, 10);
 * assert.ok(x.every((v) => v > 5));
 * ```
 */
export async function flowMapSamples(
  phi: FlowMapFn,
  n: number,
  opts: FlowMapSamplesOptions = {},
): Promise<Float32Array> {
  checkFn(phi);
  checkInt("number of samples", n, 1);
  const shape = opts.shape ?? [2];
  shape.forEach((d, i) => checkInt(`shape[${i}]`, d, 1));
  const steps = checkInt("flow-map steps N", opts.steps ?? 1, 1);
  const batch = checkInt("batch", opts.batch ?? 16384, 1);
  const gen = new Generator(checkInt("seed", opts.seed ?? 0, 0));
  const row = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n * row);
  for (let i = 0; i < n; i += batch) {
    const x0 = gen.normal([Math.min(batch, n - i), ...shape]);
    try {
      const r = await sampleFlowMap(phi, x0, { steps });
      out.set(await r.x.data(), i * row);
      r.x.dispose();
    } finally {
      x0.dispose();
    }
  }
  return out;
}
