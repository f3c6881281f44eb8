/**
 * @file Optimizers with PyTorch's update rules (SGD, Adam, AdamW, RAdam) and global-norm
 * gradient clipping. The whole update is one fused elementwise expression applied to every
 * parameter's group (p, g, slots) by `fusedGroups` (one dispatch per step on WebGPU, a few
 * when the storage-buffer limit splits the groups); its step-dependent scalars enter as
 * constants, whose values WebGPU reads from parameter words, so the compiled kernel is reused every step;
 * nothing is read back to the host.
 * @module
 */
import { keep, Tensor, tidy } from "../tensor.ts";
import {
  div,
  full,
  fusedGroups,
  type Fx,
  fx,
  globalNorm,
  minimum,
  tensor,
  zerosLike,
} from "../ops/mod.ts";
import { checkInt, checkNumber, fmtShape } from "../_util.ts";
import { copyState, type StateTensor } from "./ema.ts";
import { captureHooks } from "../capture.ts";

/** Optimizer state for checkpoints, as `stateDict()` returns it: tensors plus the step. */
export interface OptimizerState {
  /** Steps taken so far. */
  step: number;
  /** Per-parameter buffers, named `<slot>.<index>` (e.g. `exp_avg.0`). */
  tensors: Record<string, Tensor>;
}

/** Optimizer state accepted by `loadStateDict` (tensors or host `{shape, data}`). */
export interface OptimizerStateInput {
  /** Steps taken so far. */
  step: number;
  /** Per-parameter buffers, named `<slot>.<index>`. */
  tensors: Record<string, StateTensor>;
}

function checkPairs(params: readonly Tensor[], grads: readonly Tensor[]): void {
  if (params?.length === undefined || params.length !== grads?.length) {
    throw new RangeError(
      `Expected as many gradients as parameters but found ${params?.length} parameters and ` +
        `${grads?.length} gradients`,
    );
  }
  params.forEach((p, i) => {
    const g = grads[i]!;
    if (p.rank !== g.rank || p.shape.some((d, j) => d !== g.shape[j])) {
      throw new RangeError(
        `Gradient ${i} has shape ${fmtShape(g.shape)} but its parameter has shape ${
          fmtShape(p.shape)
        }`,
      );
    }
  });
}

/**
 * Common machinery: the learning rate, step count, per-parameter state slots, and
 * state-dict save/load. Subclasses implement `scalars` and `update`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, optim, randn, valueAndGrad, type Tensor } from "../../mod.ts";
 * const net = new nn.Linear(2, 1, { seed: 0 });
 * const opt: optim.Optimizer = new optim.Adam({ lr: 1e-2 });
 * const x = randn([8, 2], { seed: 1 });
 * const params = net.parameters();
 * const before = await Promise.all(params.map((p) => p.data()));
 * const [_loss, grads] = valueAndGrad((_p: Tensor[]) => net.forward(x).square().mean())(params);
 * opt.step(params, grads);
 * // Adam's first step moves every entry by lr·g/(|g| + ε) ≈ lr against the gradient's sign.
 * for (let i = 0; i < params.length; i++) {
 *   const after = await params[i]!.data(), g = await grads[i]!.data();
 *   after.forEach((v, j) => assert.ok(Math.abs(v - (before[i]![j]! - 1e-2 * Math.sign(g[j]!))) < 1e-6));
 * }
 * opt.lr = 5e-3; // e.g. from a schedule
 * const saved = opt.stateDict(); // { step: 1, tensors: { "exp_avg.0": …, … } }
 * assert.equal(saved.step, 1);
 * ```
 */
export abstract class Optimizer {
  /** Learning rate used by the next `step` (schedules set it each step). */
  lr: number;
  /** Steps taken so far. */
  stepCount = 0;
  /** Slot name → per-parameter state (created on the first step). */
  protected slots: Map<string, Tensor[]> = new Map();
  /** Names of the slots this optimizer keeps. */
  protected abstract readonly slotNames: readonly string[];

  /** An optimizer with learning rate `lr` (≥ 0). */
  constructor(lr: number) {
    this.lr = checkNumber("lr", lr, 0);
  }

  /** Zero state for every slot, created lazily to match the parameters. */
  protected state(params: readonly Tensor[]): Tensor[][] {
    for (const name of this.slotNames) {
      const have = this.slots.get(name);
      if (have && have.length === params.length) continue;
      if (have) {
        throw new RangeError(
          `This optimizer holds state for ${have.length} parameters but step() got ${params.length}`,
        );
      }
      this.slots.set(name, params.map((p) => keep(zerosLike(p))));
    }
    return this.slotNames.map((n) => this.slots.get(n)!);
  }

  /**
   * Update `params` in place from `grads` (same order and shapes). Temporaries are freed;
   * the gradients are left to the caller.
   */
  step(params: readonly Tensor[], grads: readonly Tensor[]): void {
    checkPairs(params, grads);
    checkNumber("lr", this.lr, 0);
    this.stepCount++;
    const st = this.state(params);
    let scalars = this.scalars();
    // Inside a captured step a replay redoes the count and recomputes the scalars (the
    // bias corrections and a scheduled lr change every step).
    const hooks = captureHooks();
    hooks?.host(() => {
      checkNumber("lr", this.lr, 0);
      this.stepCount++;
      scalars = this.scalars();
    });
    if (params.length === 0) return;
    // Every parameter's update in one kernel (a few when the storage-buffer limit splits the
    // groups) instead of one dispatch per parameter, written in place into p and the slots.
    // The step-dependent scalars are constants of the expression: WebGPU reads constants from
    // parameter words (not the kernel source), so one pipeline serves every step and they
    // need neither an upload nor a storage binding.
    const ns = st.length;
    tidy(() => {
      fusedGroups(
        params.map((p, i) => [p, grads[i]!, ...st.map((s) => s[i]!)]),
        [],
        (p, g, ...slots) =>
          this.update(
            p!,
            g!,
            slots,
            scalars.map((v, i) => (hooks ? fx.const(v, () => scalars[i]!) : fx.const(v))),
          ),
        { into: [0, ...Array.from({ length: ns }, (_, j) => 2 + j)] },
      );
    });
  }

  /** Step-dependent scalars passed to `update` as 0-d tensors. */
  protected abstract scalars(): number[];

  /** The fused expression of new [param, ...slots] for one parameter. */
  protected abstract update(p: Fx, g: Fx, slots: Fx[], scalars: Fx[]): Fx[];

  /** State for a checkpoint (live tensors: serialise, do not dispose). */
  stateDict(): OptimizerState {
    const tensors: Record<string, Tensor> = {};
    for (const [name, ts] of this.slots) ts.forEach((t, i) => (tensors[`${name}.${i}`] = t));
    return { step: this.stepCount, tensors };
  }

  /**
   * Restore from `stateDict()` output (tensors are copied; host `{shape, data}` entries are
   * uploaded). Everything is validated before anything is replaced. The state is matched to
   * parameters by index, so pass `step` the parameters in the same order as when saving.
   * `like` (the parameters) places host data on their backend and checks shapes.
   */
  loadStateDict(state: OptimizerStateInput, like?: readonly Tensor[]): void {
    checkInt("optimizer step", state?.step, 0);
    const bySlot = new Map<string, StateTensor[]>();
    for (const [k, t] of Object.entries(state.tensors ?? {})) {
      const m = /^(.+)\.(\d+)$/.exec(k);
      if (!m || !this.slotNames.includes(m[1]!)) {
        throw new RangeError(
          `Unexpected optimizer state "${k}": expected ${
            this.slotNames.map((s) => `"${s}.<i>"`).join(", ") || "no tensors"
          }`,
        );
      }
      const arr = bySlot.get(m[1]!) ?? [];
      arr[Number(m[2])] = t;
      bySlot.set(m[1]!, arr);
    }
    const n = bySlot.size ? Math.max(...[...bySlot.values()].map((a) => a.length)) : 0;
    if (like && n > 0 && like.length !== n) {
      throw new RangeError(`Optimizer state holds ${n} parameters but ${like.length} were given`);
    }
    const next = new Map<string, Tensor[]>();
    try {
      for (const name of n > 0 ? this.slotNames : []) {
        const arr = bySlot.get(name);
        const out: Tensor[] = [];
        next.set(name, out);
        for (let i = 0; i < n; i++) {
          const v = arr?.[i];
          if (!v) throw new RangeError(`Missing optimizer state "${name}.${i}"`);
          const ref = like?.[i] ?? (v instanceof Tensor ? v : tensor(v.data, v.shape));
          out.push(keep(copyState(v, ref, `${name}.${i}`)));
          if (ref !== like?.[i] && ref !== v) ref.dispose();
        }
      }
    } catch (e) {
      for (const ts of next.values()) ts.forEach((t) => t.dispose());
      throw e;
    }
    this.dispose();
    for (const [k, v] of next) this.slots.set(k, v);
    this.stepCount = state.step;
  }

  /** Free the optimizer state. */
  dispose(): void {
    for (const ts of this.slots.values()) ts.forEach((t) => t.dispose());
    this.slots.clear();
  }
}

/** Options of `SGD`. */
export interface SGDOptions {
  /** Learning rate. */
  lr: number;
  /** Momentum factor (default 0). */
  momentum?: number;
  /** L2 penalty added to the gradient (default 0). */
  weightDecay?: number;
  /** Nesterov momentum (default false). */
  nesterov?: boolean;
}

/**
 * Stochastic gradient descent as `torch.optim.SGD` (dampening 0): g ← g + λp;
 * b ← μb + g (b = g on the first step); p ← p − lr·(nesterov ? g + μb : b).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim, tensor } from "../../mod.ts";
 * const p = tensor([1, 2]);
 * const opt = new optim.SGD({ lr: 0.1, momentum: 0.9 });
 * opt.step([p], [tensor([1, 1])]); // the momentum buffer starts at g
 * const a = await p.data();
 * assert.ok(Math.abs(a[0]! - 0.9) < 1e-6 && Math.abs(a[1]! - 1.9) < 1e-6);
 * opt.step([p], [tensor([1, 1])]); // buffer 0.9·1 + 1 = 1.9
 * const b = await p.data();
 * assert.ok(Math.abs(b[0]! - (0.9 - 0.19)) < 1e-6);
 * ```
 */
export class SGD extends Optimizer {
  /** Momentum. */
  readonly momentum: number;
  /** Weight decay. */
  readonly weightDecay: number;
  /** Nesterov. */
  readonly nesterov: boolean;
  /** Names of the per-parameter state slots (PyTorch's, e.g. exp_avg). */
  protected readonly slotNames: readonly string[];
  /** Create a SGD; the options are described on the class and its options type. */
  constructor(opts: SGDOptions) {
    super(opts.lr);
    this.momentum = checkNumber("momentum", opts.momentum ?? 0, 0);
    this.weightDecay = checkNumber("weightDecay", opts.weightDecay ?? 0, 0);
    this.nesterov = opts.nesterov ?? false;
    this.slotNames = this.momentum > 0 ? ["momentum_buffer"] : [];
  }
  /** The step's scalar inputs of the fused update (host numbers). */
  protected scalars(): number[] {
    // PyTorch starts the buffer at g; our zero-initialised b gives μ·0 + g, the same value.
    return [-this.lr];
  }
  /** The fused per-parameter update: new p and slots as expressions of p, g, slots, scalars. */
  protected update(p: Fx, g: Fx, slots: Fx[], [nlr]: Fx[]): Fx[] {
    const mu = this.momentum, wd = this.weightDecay, nest = this.nesterov;
    if (mu === 0) return [p.add(g.add(p.mul(wd)).mul(nlr!))];
    const b = slots[0]!;
    const gd = wd ? g.add(p.mul(wd)) : g;
    const b2 = b.mul(mu).add(gd);
    const d = nest ? gd.add(b2.mul(mu)) : b2;
    return [p.add(d.mul(nlr!)), b2];
  }
}

/** Options of `Adam` and `AdamW`. */
export interface AdamOptions {
  /** Learning rate (default 1e-3). */
  lr?: number;
  /** (β₁, β₂) (default [0.9, 0.999]). */
  betas?: readonly [number, number];
  /** Denominator epsilon (default 1e-8). */
  eps?: number;
  /** Adam: L2 added to the gradient (default 0). AdamW: decoupled decay (default 0.01). */
  weightDecay?: number;
}

function adamHyper(opts: AdamOptions) {
  const [b1, b2] = opts.betas ?? [0.9, 0.999];
  return {
    b1: checkNumber("beta1", b1, 0, 1),
    b2: checkNumber("beta2", b2, 0, 1),
    eps: checkNumber("eps", opts.eps ?? 1e-8, 0),
  };
}

/**
 * Adam as `torch.optim.Adam`: g ← g + λp; m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
 * p ← p − (lr/(1−β₁ᵗ))·m / (√v/√(1−β₂ᵗ) + ε).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim, tensor } from "../../mod.ts";
 * const p = tensor([1]);
 * new optim.Adam({ lr: 0.1 }).step([p], [tensor([3])]);
 * // The first Adam step is lr·m̂/(√v̂ + ε) = 0.1·3/(3 + 1e-8) ≈ lr·sign(g).
 * assert.ok(Math.abs((await p.data())[0]! - 0.9) < 1e-6);
 * ```
 */
export class Adam extends Optimizer {
  /** β₁. */
  readonly beta1: number;
  /** β₂. */
  readonly beta2: number;
  /** ε. */
  readonly eps: number;
  /** Weight decay. */
  readonly weightDecay: number;
  /** Whether the decay is decoupled (AdamW). */
  protected readonly decoupled: boolean = false;
  /** Names of the per-parameter state slots (PyTorch's, e.g. exp_avg). */
  protected readonly slotNames: readonly string[] = ["exp_avg", "exp_avg_sq"];
  /** Create a Adam; the options are described on the class and its options type. */
  constructor(opts: AdamOptions = {}, defaultDecay = 0) {
    super(opts.lr ?? 1e-3);
    const h = adamHyper(opts);
    this.beta1 = h.b1;
    this.beta2 = h.b2;
    this.eps = h.eps;
    this.weightDecay = checkNumber("weightDecay", opts.weightDecay ?? defaultDecay, 0);
  }
  /** The step's scalar inputs of the fused update (host numbers). */
  protected scalars(): number[] {
    const t = this.stepCount;
    const bc1 = 1 - Math.pow(this.beta1, t), bc2 = 1 - Math.pow(this.beta2, t);
    // [−step size, 1/√bc2, decoupled decay factor 1 − lr·λ]
    return [-this.lr / bc1, 1 / Math.sqrt(bc2), 1 - this.lr * this.weightDecay];
  }
  /** The fused per-parameter update: new p and slots as expressions of p, g, slots, scalars. */
  protected update(p: Fx, g: Fx, [m, v]: Fx[], [nss, ibc2, keepF]: Fx[]): Fx[] {
    const { beta1: b1, beta2: b2, eps, weightDecay: wd } = this;
    const dec = this.decoupled;
    const gd = !dec && wd ? g.add(p.mul(wd)) : g;
    const m2 = m!.mul(b1).add(gd.mul(1 - b1));
    const v2 = v!.mul(b2).add(gd.square().mul(1 - b2));
    const p0 = dec && wd ? p.mul(keepF!) : p;
    const p2 = p0.add(m2.div(v2.sqrt().mul(ibc2!).add(eps)).mul(nss!));
    return [p2, m2, v2];
  }
}

/**
 * AdamW as `torch.optim.AdamW`: p ← p·(1 − lr·λ) first (decoupled decay, default λ = 0.01),
 * then the Adam step without L2 in the gradient.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim, tensor } from "../../mod.ts";
 * const p = tensor([1]);
 * new optim.AdamW({ lr: 0.1, weightDecay: 0.1 }).step([p], [tensor([3])]);
 * // Decoupled decay then the Adam step: 1·(1 − 0.1·0.1) − 0.1
 * assert.ok(Math.abs((await p.data())[0]! - 0.89) < 1e-6);
 * ```
 */
export class AdamW extends Adam {
  /** Decoupled weight decay (AdamW) instead of L2 added to the gradient. */
  protected override readonly decoupled: boolean = true;
  /** Create a AdamW; the options are described on the class and its options type. */
  constructor(opts: AdamOptions = {}) {
    super(opts, 0.01);
  }
}

/**
 * RAdam as `torch.optim.RAdam` (1.13): with ρ∞ = 2/(1−β₂) − 1 and
 * ρₜ = ρ∞ − 2tβ₂ᵗ/(1−β₂ᵗ), the step is lr·m̂·r·√(1−β₂ᵗ)/(√v + ε) with the rectification
 * r = √((ρₜ−4)(ρₜ−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρₜ)) when ρₜ > 5, else the plain momentum step lr·m̂.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim, tensor } from "../../mod.ts";
 * const p = tensor([1]);
 * new optim.RAdam({ lr: 0.1 }).step([p], [tensor([3])]);
 * // ρ₁ ≤ 5, so the first steps are un-rectified: p − lr·m̂ = 1 − 0.1·3
 * assert.ok(Math.abs((await p.data())[0]! - 0.7) < 1e-6);
 * ```
 */
export class RAdam extends Optimizer {
  /** β₁. */
  readonly beta1: number;
  /** β₂. */
  readonly beta2: number;
  /** ε. */
  readonly eps: number;
  /** L2 added to the gradient. */
  readonly weightDecay: number;
  /** Names of the per-parameter state slots (PyTorch's, e.g. exp_avg). */
  protected readonly slotNames: readonly string[] = ["exp_avg", "exp_avg_sq"];
  /** Create a RAdam; the options are described on the class and its options type. */
  constructor(opts: AdamOptions = {}) {
    super(opts.lr ?? 1e-3);
    const h = adamHyper(opts);
    this.beta1 = h.b1;
    this.beta2 = h.b2;
    this.eps = h.eps;
    this.weightDecay = checkNumber("weightDecay", opts.weightDecay ?? 0, 0);
  }
  /** The step's scalar inputs of the fused update (host numbers). */
  protected scalars(): number[] {
    const t = this.stepCount, b2 = this.beta2;
    const bc1 = 1 - Math.pow(this.beta1, t), bc2 = 1 - Math.pow(b2, t);
    const rhoInf = 2 / (1 - b2) - 1;
    const rhoT = rhoInf - 2 * t * Math.pow(b2, t) / bc2;
    if (rhoT > 5) {
      const rect = Math.sqrt(
        (rhoT - 4) * (rhoT - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rhoT),
      );
      // [−lr·r/bc1 · √bc2, adaptive flag 1]
      return [-this.lr * rect * Math.sqrt(bc2) / bc1, 1];
    }
    return [-this.lr / bc1, 0];
  }
  /** The fused per-parameter update: new p and slots as expressions of p, g, slots, scalars. */
  protected update(p: Fx, g: Fx, [m, v]: Fx[], [coef, adaptive]: Fx[]): Fx[] {
    const { beta1: b1, beta2: b2, eps, weightDecay: wd } = this;
    const gd = wd ? g.add(p.mul(wd)) : g;
    const m2 = m!.mul(b1).add(gd.mul(1 - b1));
    const v2 = v!.mul(b2).add(gd.square().mul(1 - b2));
    // adaptive ∈ {0, 1}: denominator √v + ε, or 1 (un-rectified warm-up steps).
    const denom = v2.sqrt().add(eps).mul(adaptive!).add(adaptive!.affine(-1, 1));
    return [p.add(m2.div(denom).mul(coef!)), m2, v2];
  }
}

/** Result of `clipGradNorm`. */
export interface ClippedGrads {
  /** The scaled gradients (new tensors; the inputs are left to the caller). */
  grads: Tensor[];
  /** The global 2-norm before clipping (a 0-d tensor, not read back). */
  norm: Tensor;
}

/**
 * Clip gradients by their global 2-norm, as `torch.nn.utils.clip_grad_norm_`: every
 * gradient is multiplied by min(1, maxNorm / (‖g‖ + 1e-6)). Stays on the device.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim, tensor } from "../../mod.ts";
 * const { grads, norm } = optim.clipGradNorm([tensor([3, 4])], 1);
 * assert.equal(await norm.item(), 5);
 * // scaled by 1/(5 + 1e-6)
 * const g = await grads[0]!.data();
 * assert.ok(Math.abs(g[0]! - 3 / (5 + 1e-6)) < 1e-6 && Math.abs(g[1]! - 4 / (5 + 1e-6)) < 1e-6);
 * ```
 */
export function clipGradNorm(grads: readonly Tensor[], maxNorm: number): ClippedGrads {
  checkNumber("maxNorm", maxNorm, 0);
  if (grads.length === 0) return { grads: [], norm: full([], 0) };
  return tidy(() => {
    const norm = globalNorm(grads);
    const coef = minimum(div(maxNorm, norm.add(1e-6)), 1);
    return { grads: grads.map((g) => g.mul(coef)), norm };
  });
}
