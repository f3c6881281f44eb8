/**
 * @file ODE and SDE samplers for a velocity field (x, t, cond?) -> v, integrating from
 * t0 = 0 (noise) to t1 = 1 (data). Fixed-step methods never read back; dopri5 reads one
 * scalar (the error norm) per attempted step.
 * @module
 */
import { Tensor, tidy } from "../tensor.ts";
import { add, div, full, maximum, mean, mul, sqrt, square, sub } from "../ops/ops.ts";
import { type Generator, randn } from "../random.ts";
import { checkChoice, checkInt, checkNumber, fmtShape } from "../_util.ts";
import type { VelocityFn } from "./paths.ts";

/** Integration methods of {@link integrate}. */
export type SamplerMethod = "euler" | "midpoint" | "heun" | "rk4" | "dopri5" | "euler-maruyama";

/**
 * The method names, for CLIs.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { SAMPLER_METHODS } from "../../mod.ts";
 * assert.ok(SAMPLER_METHODS.includes("dopri5"));
 * assert.ok(SAMPLER_METHODS.includes("euler"));
 * ```
 */
export const SAMPLER_METHODS: readonly SamplerMethod[] = [
  "euler",
  "midpoint",
  "heun",
  "rk4",
  "dopri5",
  "euler-maruyama",
];

/** Options for {@link integrate}. */
export interface IntegrateOptions {
  /** Method (default `"euler"`). */
  method?: SamplerMethod;
  /** Uniform steps for the fixed-step methods and Euler–Maruyama (default 50). */
  steps?: number;
  /** Start time (default 0). */
  t0?: number;
  /** End time (default 1). */
  t1?: number;
  /** dopri5 absolute tolerance (default 1e-5). */
  atol?: number;
  /** dopri5 relative tolerance (default 1e-5). */
  rtol?: number;
  /** dopri5 attempted-step cap (default 10000). */
  maxSteps?: number;
  /** Conditioning passed as the velocity's third argument. */
  cond?: Tensor;
  /** Keep x at every grid (or accepted dopri5) time in `trajectory` (default false). */
  record?: boolean;
  /** Random stream for Euler–Maruyama. */
  generator?: Generator;
  /**
   * Euler–Maruyama diffusion g(t) (default √(2(1 − t)): REPA's w(t) = σ_t with σ_t = 1 − t in
   * our convention, which makes the score term (g²/2)·s = t·v − x finite up to t = 1).
   */
  diffusion?: (t: number) => number;
  /** Euler–Maruyama stops the noisy steps at t1 − sdeEps, then takes one Euler step (default 0.04, as REPA). */
  sdeEps?: number;
}

/** The result of {@link integrate}. The caller owns `x` and the trajectory tensors. */
export interface IntegrateResult {
  /** x(t1). */
  x: Tensor;
  /** Velocity evaluations (each one batched call). */
  nfe: number;
  /** x at each time in `times` (when `record` was set), starting with a copy of x0. */
  trajectory?: Tensor[];
  /** The grid or accepted times, t0 first, t1 last. */
  times: number[];
  /** dopri5: accepted and rejected steps. */
  accepted?: number;
  /** dopri5: rejected steps. */
  rejected?: number;
}

function sameShape(v: Tensor, x: Tensor): Tensor {
  if (v.rank !== x.rank || v.shape.some((d, i) => d !== x.shape[i])) {
    throw new RangeError(
      `Expected the velocity to return shape ${fmtShape(x.shape)} but it returned ${
        fmtShape(v.shape)
      }`,
    );
  }
  return v;
}

/**
 * Integrate dx/dt = v(x, t, cond) from t0 to t1 (or the SDE dx = [v + (g²/2)·s]dt + g·dW with
 * the score s derived from v, for `"euler-maruyama"`).
 *
 * Fixed-step methods use the uniform grid t_k = t0 + k·(t1 − t0)/steps: euler (1 evaluation
 * per step), midpoint and heun (2), rk4 (4). dopri5 is the adaptive Dormand–Prince 5(4) pair
 * with first-same-as-last, RMS error norm over all elements with scale atol + rtol·max(|x|, |x'|),
 * Hairer's initial step, and the controller h ← h·clamp(0.9·err^(−1/5), 0.2, 10).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { integrate, tensor } from "../../mod.ts";
 * // dx/dt = t from 0 to 1 adds ∫t dt = 1/2, which RK4 integrates exactly; 4 steps × 4 calls.
 * const r = await integrate((x, t) => x.mul(0).add(t.reshape([-1, 1])), tensor([[0], [1]]), { method: "rk4", steps: 4 });
 * const x = await r.x.data();
 * assert.ok(Math.abs(x[0]! - 0.5) < 1e-6 && Math.abs(x[1]! - 1.5) < 1e-6);
 * assert.equal(r.nfe, 16);
 * ```
 */
export async function integrate(
  velocity: VelocityFn,
  x0: Tensor,
  opts: IntegrateOptions = {},
): Promise<IntegrateResult> {
  if (typeof velocity !== "function") {
    throw new TypeError("Expected velocity to be a function (x, t, cond?) => Tensor");
  }
  if (!(x0 instanceof Tensor) || x0.rank < 1) {
    throw new RangeError("Expected x0 to be a tensor with a batch axis [B, ...]");
  }
  const method = checkChoice("sampler method", opts.method ?? "euler", SAMPLER_METHODS);
  const t0 = checkNumber("t0", opts.t0 ?? 0), t1 = checkNumber("t1", opts.t1 ?? 1);
  const B = x0.shape[0]!;
  const cond = opts.cond;
  let nfe = 0;
  const f = (x: Tensor, t: number): Tensor => {
    nfe++;
    const tt = full([B], t);
    return sameShape(cond === undefined ? velocity(x, tt) : velocity(x, tt, cond), x);
  };
  if (method === "dopri5") return await dopri5(f, x0, t0, t1, opts, () => nfe);
  const steps = checkInt("steps", opts.steps ?? 50, 1);
  const record = opts.record ?? false;
  const traj: Tensor[] | undefined = record ? [add(x0, 0)] : undefined;
  const times: number[] = [t0];
  let x = x0;
  const advance = (xn: Tensor, t: number) => {
    if (x !== x0 && !record) x.dispose();
    x = xn;
    times.push(t);
    if (traj) traj.push(xn);
  };
  if (method === "euler-maruyama") {
    const eps = checkNumber("sdeEps", opts.sdeEps ?? 0.04, 0, Math.abs(t1 - t0));
    const g = opts.diffusion ?? ((t: number) => Math.sqrt(Math.max(0, 2 * (1 - t))));
    const tEnd = t1 - Math.sign(t1 - t0) * eps;
    const grid = steps === 1
      ? [t0]
      : Array.from({ length: steps }, (_, k) => t0 + (k * (tEnd - t0)) / (steps - 1));
    for (let k = 0; k + 1 < grid.length; k++) {
      const t = grid[k]!, h = grid[k + 1]! - t;
      const gt = g(t);
      checkNumber("diffusion(t)", gt, 0);
      const z = randn(x.shape, { generator: opts.generator });
      const xn = tidy(() => {
        const v = f(x, t);
        // Linear path with N(0, I) source: x_t = (1−t)·x0 + t·x1 gives v = E[x1 − x0 | x_t]
        // and x_t = (1−t)·E[x0|x_t] + t·E[x1|x_t], so E[x0 | x_t] = x_t − t·v. Since
        // x_t | x1 ~ N(t·x1, (1−t)²I), the score is s = −E[x0 | x_t]/(1 − t) = (t·v − x)/(1 − t).
        // The SDE dx = [v + (g²/2)·s]dt + g·dW has the same marginals as the ODE (Fokker–Planck).
        // (g²/2)/(1 − t) is evaluated as one number so g² ∝ (1 − t) never divides 0 by 0.
        const c = t < 1 ? (gt * gt) / 2 / (1 - t) : 0;
        const drift = add(v, mul(sub(mul(v, t), x), c));
        return add(add(x, mul(drift, h)), mul(z, gt * Math.sqrt(Math.abs(h))));
      });
      z.dispose();
      advance(xn, grid[k + 1]!);
    }
    // Final deterministic Euler step to t1, where the score term is singular.
    const tl = grid[grid.length - 1]!;
    if (tl !== t1) advance(tidy(() => add(x, mul(f(x, tl), t1 - tl))), t1);
  } else {
    const h = (t1 - t0) / steps;
    for (let k = 0; k < steps; k++) {
      const t = t0 + k * h;
      const xn = tidy(() => fixedStep(method, f, x, t, h));
      advance(xn, k + 1 === steps ? t1 : t0 + (k + 1) * h);
    }
  }
  if (x === x0) x = add(x0, 0);
  const res: IntegrateResult = { x: traj ? add(x, 0) : x, nfe, times };
  if (traj) res.trajectory = traj;
  return res;
}

function fixedStep(
  method: "euler" | "midpoint" | "heun" | "rk4",
  f: (x: Tensor, t: number) => Tensor,
  x: Tensor,
  t: number,
  h: number,
): Tensor {
  const k1 = f(x, t);
  switch (method) {
    case "euler":
      return add(x, mul(k1, h));
    case "midpoint":
      return add(x, mul(f(add(x, mul(k1, h / 2)), t + h / 2), h));
    case "heun": {
      const k2 = f(add(x, mul(k1, h)), t + h);
      return add(x, mul(add(k1, k2), h / 2));
    }
    case "rk4": {
      const k2 = f(add(x, mul(k1, h / 2)), t + h / 2);
      const k3 = f(add(x, mul(k2, h / 2)), t + h / 2);
      const k4 = f(add(x, mul(k3, h)), t + h);
      const s = add(add(k1, k4), mul(add(k2, k3), 2));
      return add(x, mul(s, h / 6));
    }
  }
}

// Dormand–Prince 5(4) tableau (Hairer, Nørsett & Wanner, Table 5.2).
const C = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1];
const A: number[][] = [
  [],
  [1 / 5],
  [3 / 40, 9 / 40],
  [44 / 45, -56 / 15, 32 / 9],
  [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
  [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
  [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
];
// Error weights: 5th-order b minus 4th-order b̂.
const E = [
  35 / 384 - 5179 / 57600,
  0,
  500 / 1113 - 7571 / 16695,
  125 / 192 - 393 / 640,
  -2187 / 6784 + 92097 / 339200,
  11 / 84 - 187 / 2100,
  -1 / 40,
];

function combo(x: Tensor, ks: Tensor[], coef: number[], h: number): Tensor {
  let acc = x;
  for (let i = 0; i < ks.length; i++) {
    if (coef[i] === 0) continue;
    acc = add(acc, mul(ks[i]!, h * coef[i]!));
  }
  return acc === x ? add(x, 0) : acc;
}

/**
 * One Dormand–Prince 5(4) step of size `h` from (x, t) with k1 = f(x, t) given: the 5th-order
 * solution `xn`, the seven stages `ks` (ks[0] is k1, ks[6] = f(xn, t + h), reused as the next
 * step's k1) and the embedded error estimate `errVec` = h·Σ (b_i − b̂_i)·k_i. The caller owns
 * `xn`, `errVec` and `ks[1..6]`.
 *
 * @example
 * ```ts
 * import { dopri5Step } from "./samplers.ts";
 * import { tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * // dx/dt = x from x = 1: one step of 0.1 matches e^0.1 to 5th order.
 * const f = (x: import("../../mod.ts").Tensor) => x.mul(1);
 * const x = tensor([1]);
 * const { xn } = dopri5Step(f, x, f(x), 0, 0.1);
 * assert.ok(Math.abs((await xn.item()) - Math.exp(0.1)) < 1e-6);
 * ```
 */
export function dopri5Step(
  f: (x: Tensor, t: number) => Tensor,
  x: Tensor,
  k1: Tensor,
  t: number,
  h: number,
): { xn: Tensor; ks: Tensor[]; errVec: Tensor } {
  const ks: Tensor[] = [k1];
  for (let s = 1; s < 6; s++) {
    const xs = tidy(() => combo(x, ks, A[s]!, h));
    ks.push(f(xs, t + C[s]! * h));
    xs.dispose();
  }
  const xn = tidy(() => combo(x, ks, A[6]!, h));
  ks.push(f(xn, t + h));
  const errVec = tidy(() => combo(full(x.shape, 0), ks, E, h));
  return { xn, ks, errVec };
}

async function scalar(t: Tensor): Promise<number> {
  const v = (await t.data())[0]!;
  t.dispose();
  return v;
}

async function dopri5(
  fRaw: (x: Tensor, t: number) => Tensor,
  x0: Tensor,
  t0: number,
  t1: number,
  opts: IntegrateOptions,
  nfe: () => number,
): Promise<IntegrateResult> {
  const atol = checkNumber("atol", opts.atol ?? 1e-5, 0);
  const rtol = checkNumber("rtol", opts.rtol ?? 1e-5, 0);
  if (atol === 0 && rtol === 0) {
    throw new RangeError("Expected atol or rtol to be > 0 but both are 0");
  }
  const maxSteps = checkInt("maxSteps", opts.maxSteps ?? 10000, 1);
  // Each evaluation in its own scope, so the velocity's intermediates are freed at once.
  const f = (x: Tensor, t: number): Tensor => tidy(() => fRaw(x, t));
  const record = opts.record ?? false;
  const times = [t0];
  const dir = Math.sign(t1 - t0);
  let x = add(x0, 0);
  const traj: Tensor[] | undefined = record ? [x] : undefined;
  if (dir === 0) {
    return { x: traj ? add(x, 0) : x, nfe: 0, times, trajectory: traj, accepted: 0, rejected: 0 };
  }
  // RMS norm of y / (atol + rtol·|ref|) over all elements (torchdiffeq's mixed norm).
  const rms = (y: Tensor, ref: Tensor, ref2?: Tensor): Tensor =>
    tidy(() => {
      const r = ref2 ? maximum(ref.abs(), ref2.abs()) : ref.abs();
      return sqrt(mean(square(div(y, add(mul(r, rtol), atol)))));
    });
  let k1 = f(x, t0);
  // Hairer's initial step (Solving ODEs I, II.4): one extra evaluation.
  const d0 = await scalar(rms(x, x)), d1 = await scalar(rms(k1, x));
  const h0 = d0 < 1e-5 || d1 < 1e-5 ? 1e-6 : 0.01 * (d0 / d1);
  const y1 = tidy(() => add(x, mul(k1, dir * h0)));
  const f1 = f(y1, t0 + dir * h0);
  const d2 = (await scalar(tidy(() => rms(sub(f1, k1), x)))) / h0;
  y1.dispose();
  f1.dispose();
  const dm = Math.max(d1, d2);
  const h1 = dm <= 1e-15 ? Math.max(1e-6, h0 * 1e-3) : Math.pow(0.01 / dm, 1 / 5);
  let h = Math.min(100 * h0, h1, Math.abs(t1 - t0));
  let t = t0, accepted = 0, rejected = 0;
  try {
    while (dir * (t1 - t) > 0) {
      if (accepted + rejected >= maxSteps) {
        throw new RangeError(
          `dopri5 did not reach t1 = ${t1} within maxSteps = ${maxSteps} (at t = ${t})`,
        );
      }
      const last = Math.abs(t1 - t) <= h * (1 + 1e-12);
      const hs = last ? t1 - t : dir * h;
      const { xn, ks, errVec } = dopri5Step(f, x, k1, t, hs);
      const k7 = ks[6]!;
      const err = await scalar(rms(errVec, x, xn));
      errVec.dispose();
      const ok = err <= 1 && Number.isFinite(err);
      const fac = !Number.isFinite(err)
        ? 0.2
        : err === 0
        ? 10
        : Math.min(10, Math.max(0.2, 0.9 * Math.pow(err, -1 / 5)));
      if (ok) {
        accepted++;
        t = last ? t1 : t + hs;
        if (!record) x.dispose();
        x = xn;
        for (let s = 0; s < 6; s++) ks[s]!.dispose();
        k1 = k7; // first same as last
        times.push(t);
        if (traj) traj.push(xn);
        h = Math.abs(hs) * fac;
      } else {
        rejected++;
        xn.dispose();
        for (let s = 1; s < 7; s++) ks[s]!.dispose();
        h = Math.abs(hs) * Math.min(1, fac);
      }
      if (h < 1e-12 * Math.max(1, Math.abs(t))) {
        throw new RangeError(
          `dopri5 step size underflow at t = ${t}: the field may be stiff or non-finite`,
        );
      }
    }
  } finally {
    k1.dispose();
  }
  const res: IntegrateResult = { x: traj ? add(x, 0) : x, nfe: nfe(), times, accepted, rejected };
  if (traj) res.trajectory = traj;
  return res;
}
