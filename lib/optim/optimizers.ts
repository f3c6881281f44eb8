/**
 * @file Optimizers with PyTorch's update rules (SGD, Adam, AdamW, RAdam), Muon (momentum
 * orthogonalised by Newton–Schulz, with AdamW for the other parameters) and global-norm
 * gradient clipping. The whole update is one fused elementwise expression applied to every
 * parameter's group (p, g, slots) by `fusedGroups` (one dispatch per step on WebGPU, a few
 * when the storage-buffer limit splits the groups); its step-dependent scalars enter as
 * constants, whose values WebGPU reads from parameter words, so the compiled kernel is reused every step;
 * nothing is read back to the host.
 * @module
 */
import { keep, matmul, reshape, Tensor, tidy } from "../tensor.ts";
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

/** The quintic Newton–Schulz coefficients (a, b, c) of Keller Jordan's Muon. */
const NS_COEFFS = [3.4445, -4.775, 2.0315] as const;

/**
 * An approximate orthogonalisation of a matrix G [m, n] (the "zeroth power" U·Vᵀ of its SVD
 * U·S·Vᵀ) by `steps` quintic Newton–Schulz iterations, as Muon computes it: X ← G/(‖G‖_F + 1e-7),
 * working on Gᵀ when m > n so that X·Xᵀ is the smaller Gram matrix, then
 * X ← aX + (bA + cA²)X with A = XXᵀ and (a, b, c) = (3.4445, −4.7750, 2.0315). The
 * coefficients trade exactness for speed: singular values land in roughly [0.7, 1.2], not
 * at 1. Tensor ops only (matmuls), so it runs on every backend.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim, tensor } from "../../mod.ts";
 * // diag(2, 1): the iteration acts on each singular value separately, so the result stays
 * // diagonal, with both entries pulled from (0.89, 0.45) towards 1.
 * const x = await optim.newtonSchulz(tensor([2, 0, 0, 1], [2, 2])).data();
 * assert.ok(Math.abs(x[1]!) < 1e-6 && Math.abs(x[2]!) < 1e-6);
 * assert.ok(x[0]! > 0.6 && x[0]! < 1.25 && x[3]! > 0.6 && x[3]! < 1.25);
 * ```
 */
export function newtonSchulz(g: Tensor, steps = 5): Tensor {
  checkInt("steps", steps, 0);
  if (g?.rank !== 2) {
    throw new RangeError(
      `Expected a matrix [m, n] to orthogonalise but found ${g ? fmtShape(g.shape) : String(g)}`,
    );
  }
  const [a, b, c] = NS_COEFFS;
  const tall = g.shape[0]! > g.shape[1]!;
  return tidy(() => {
    // Transposing with the matmul flags (not a copy): X is Gᵀ when G is tall.
    let x = g.div(g.square().sum().sqrt().add(1e-7));
    const gram = (m: Tensor) => matmul(m, m, tall ? { transA: true } : { transB: true });
    const left = (m: Tensor, xx: Tensor) => tall ? matmul(xx, m) : matmul(m, xx); // B·X, or X·B for the transposed layout
    for (let i = 0; i < steps; i++) {
      const A = gram(x);
      const B = A.mul(b).add(matmul(A, A).mul(c));
      x = x.mul(a).add(left(B, x));
    }
    return x;
  });
}

/** Options of `Muon`. */
export interface MuonOptions {
  /** Learning rate of the orthogonalised updates (default 0.02, Keller Jordan's). */
  lr?: number;
  /** Momentum β (default 0.95). */
  momentum?: number;
  /** Nesterov momentum: orthogonalise (1−β)g + β·b instead of b (default true). */
  nesterov?: boolean;
  /** Newton–Schulz iterations (default 5). */
  nsSteps?: number;
  /** Decoupled weight decay of the Muon parameters: p ← p·(1 − lr·λ) (default 0). */
  weightDecay?: number;
  /**
   * Which parameters take the Muon update, by index; the rest take AdamW. Default: every
   * parameter of rank ≥ 2 (a rank-4 convolution weight is flattened to [out, in·kh·kw]).
   * Embedding tables and output heads are usually better left to AdamW: see `muonMask`.
   */
  muon?: readonly boolean[];
  /**
   * The AdamW that updates the other parameters (biases, norms, embeddings): its learning rate
   * (default 3e-4), betas (default [0.9, 0.95]), eps (default 1e-10) and decoupled weight
   * decay (default 0), Keller Jordan's `MuonWithAuxAdam` defaults. When a schedule changes
   * `lr`, this rate scales with it (it is `lr × adamw.lr / initial lr`).
   */
  adamw?: AdamOptions;
}

/**
 * Which of named parameters Muon should orthogonalise: matrices (rank ≥ 2) except embedding
 * tables (a name containing `embedding_table` or `embedding.weight`, e.g. a label embedder's
 * `y_embedder.embedding_table`), whose rows are looked up one at a time, not multiplied.
 * Pass the result as `MuonOptions.muon` with the parameters in the same order.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim, zeros } from "../../mod.ts";
 * const mask = optim.muonMask([
 *   ["blocks.0.weight", zeros([4, 3])],
 *   ["blocks.0.bias", zeros([4])],
 *   ["y_embedder.embedding_table", zeros([11, 4])],
 * ]);
 * assert.deepEqual(mask, [true, false, false]);
 * ```
 */
export function muonMask(named: Iterable<readonly [string, Tensor]>): boolean[] {
  return [...named].map(([name, p]) =>
    p.rank >= 2 && !/embedding_table|embedding\.weight/.test(name)
  );
}

/**
 * Muon ("MomentUm Orthogonalized by Newton–Schulz", Keller Jordan 2024), the optimizer seed
 * 001 offers beside AdamW, with an AdamW for the parameters it does not orthogonalise (as
 * `MuonWithAuxAdam`). For a matrix parameter W [m, n] (a conv weight flattened to 2-D):
 *
 *   b ← βb + (1−β)g;  u = nesterov ? (1−β)g + βb : b;
 *   O = newtonSchulz(u, 5) · √max(1, m/n);  W ← W·(1 − lr·λ) − lr·O
 *
 * The √max(1, m/n) factor gives tall matrices updates of the same RMS per entry as wide ones.
 * Every other parameter (rank < 2, or masked out by `muon`) follows `torch.optim.AdamW` with
 * the `adamw` settings. State: `momentum_buffer.<i>` for Muon parameters, `exp_avg.<i>` and
 * `exp_avg_sq.<i>` for AdamW ones (i = the parameter's index). On WebGPU nothing is read back.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { optim, tensor } from "../../mod.ts";
 * const w = tensor([1, 0, 0, 1], [2, 2]), bias = tensor([0.5]);
 * const opt = new optim.Muon({ lr: 0.1, adamw: { lr: 0.01 } });
 * opt.step([w, bias], [tensor([3, 0, 0, 3], [2, 2]), tensor([2])]);
 * // The gradient 3·I orthogonalises to about I, whatever its scale: W ≈ (1 − 0.1·s)·I with
 * // s the Newton–Schulz image of singular value 1/√2 (in [0.7, 1.2]).
 * const a = await w.data();
 * assert.ok(a[0]! > 0.87 && a[0]! < 0.94 && a[0] === a[3] && a[1] === 0);
 * // The bias takes AdamW's first step, lr·sign(g).
 * assert.ok(Math.abs((await bias.data())[0]! - 0.49) < 1e-6);
 * assert.deepEqual(Object.keys(opt.stateDict().tensors).sort(),
 *   ["exp_avg.1", "exp_avg_sq.1", "momentum_buffer.0"]);
 * ```
 */
export class Muon extends Optimizer {
  /** Momentum β. */
  readonly momentum: number;
  /** Nesterov momentum. */
  readonly nesterov: boolean;
  /** Newton–Schulz iterations. */
  readonly nsSteps: number;
  /** Decoupled weight decay of the Muon parameters. */
  readonly weightDecay: number;
  /** AdamW's (β₁, β₂). */
  readonly adamwBetas: readonly [number, number];
  /** AdamW's ε. */
  readonly adamwEps: number;
  /** AdamW's decoupled weight decay. */
  readonly adamwWeightDecay: number;
  /** AdamW's rate relative to `lr` (kept when a schedule changes `lr`). */
  readonly adamwLrRatio: number;
  /** Names of the per-parameter state slots. */
  protected readonly slotNames: readonly string[] = ["momentum_buffer", "exp_avg", "exp_avg_sq"];
  private readonly mask?: readonly boolean[];
  /** Create a Muon; the options are described on the class and its options type. */
  constructor(opts: MuonOptions = {}) {
    super(opts.lr ?? 0.02);
    this.momentum = checkNumber("momentum", opts.momentum ?? 0.95, 0, 1);
    this.nesterov = opts.nesterov ?? true;
    this.nsSteps = checkInt("nsSteps", opts.nsSteps ?? 5, 1);
    this.weightDecay = checkNumber("weightDecay", opts.weightDecay ?? 0, 0);
    const h = adamHyper({ betas: [0.9, 0.95], eps: 1e-10, ...opts.adamw });
    this.adamwBetas = [h.b1, h.b2];
    this.adamwEps = h.eps;
    this.adamwWeightDecay = checkNumber("adamw.weightDecay", opts.adamw?.weightDecay ?? 0, 0);
    const alr = checkNumber("adamw.lr", opts.adamw?.lr ?? 3e-4, 0);
    this.adamwLrRatio = this.lr > 0 ? alr / this.lr : 0;
    if (opts.muon !== undefined && !Array.isArray(opts.muon)) {
      throw new TypeError(`Expected muon to be an array of booleans but found ${opts.muon}`);
    }
    this.mask = opts.muon;
  }

  /** Whether parameter `i` takes the Muon update. */
  private isMuon(params: readonly Tensor[], i: number): boolean {
    return this.mask ? this.mask[i] === true : params[i]!.rank >= 2;
  }

  /** Sparse slots: momentum for Muon parameters, the AdamW moments for the others. */
  protected override state(params: readonly Tensor[]): Tensor[][] {
    if (this.mask && this.mask.length !== params.length) {
      throw new RangeError(
        `Expected the muon mask to have one entry per parameter (${params.length}) but found ${this.mask.length}`,
      );
    }
    const have = this.slots.get("momentum_buffer");
    if (have) {
      if (have.length > params.length || this.slots.get("exp_avg")!.length > params.length) {
        throw new RangeError(
          `This optimizer holds state for more parameters than the ${params.length} step() got`,
        );
      }
    }
    const out = this.slotNames.map((n) => {
      if (!this.slots.has(n)) this.slots.set(n, []);
      return this.slots.get(n)!;
    });
    params.forEach((p, i) => {
      const slots = this.isMuon(params, i) ? [out[0]!] : [out[1]!, out[2]!];
      for (const s of slots) if (!s[i]) s[i] = keep(zerosLike(p));
    });
    return out;
  }

  /** [−AdamW step size, 1/√bc2, AdamW decay factor] of this step. */
  protected scalars(): number[] {
    const t = this.stepCount, [b1, b2] = this.adamwBetas, lr = this.lr * this.adamwLrRatio;
    const bc1 = 1 - Math.pow(b1, t), bc2 = 1 - Math.pow(b2, t);
    return [-lr / bc1, 1 / Math.sqrt(bc2), 1 - lr * this.adamwWeightDecay];
  }

  /** AdamW's fused update for the parameters Muon leaves out. */
  protected update(p: Fx, g: Fx, [m, v]: Fx[], [nss, ibc2, keepF]: Fx[]): Fx[] {
    const [b1, b2] = this.adamwBetas;
    const m2 = m!.mul(b1).add(g.mul(1 - b1));
    const v2 = v!.mul(b2).add(g.square().mul(1 - b2));
    const p2 = p.mul(keepF!).add(m2.div(v2.sqrt().mul(ibc2!).add(this.adamwEps)).mul(nss!));
    return [p2, m2, v2];
  }

  /** Update `params` in place from `grads`; see the class doc for the rule. */
  override step(params: readonly Tensor[], grads: readonly Tensor[]): void {
    checkPairs(params, grads);
    checkNumber("lr", this.lr, 0);
    this.stepCount++;
    const [buf, m, v] = this.state(params) as [Tensor[], Tensor[], Tensor[]];
    if (params.length === 0) return;
    const mu: number[] = [], ad: number[] = [];
    params.forEach((_, i) => (this.isMuon(params, i) ? mu : ad).push(i));
    const sc = this.scalars().map((s) => fx.const(s));
    const beta = this.momentum, lr = this.lr, keepW = 1 - lr * this.weightDecay;
    tidy(() => {
      if (ad.length) {
        fusedGroups(
          ad.map((i) => [params[i]!, grads[i]!, m[i]!, v[i]!]),
          [],
          (p, g, mm, vv) => this.update(p!, g!, [mm!, vv!], sc),
          { into: [0, 2, 3] },
        );
      }
      if (!mu.length) return;
      // Every momentum buffer in one kernel: b ← βb + (1−β)g (torch's lerp_).
      fusedGroups(
        mu.map((i) => [buf[i]!, grads[i]!]),
        [],
        (b, g) => b!.mul(beta).add(g!.mul(1 - beta)),
        { into: [0] },
      );
      for (const i of mu) {
        const p = params[i]!, g = grads[i]!, b = buf[i]!;
        const rows = p.shape[0]!, cols = p.size / rows;
        const u = this.nesterov ? g.mul(1 - beta).add(b.mul(beta)) : b;
        const o = newtonSchulz(reshape(u, [rows, cols]), this.nsSteps);
        const s = -lr * Math.sqrt(Math.max(1, rows / cols));
        fusedGroups(
          [[p, reshape(o, p.shape)]],
          [],
          (pp, oo) => pp!.mul(fx.const(keepW)).add(oo!.mul(fx.const(s))),
          { into: [0] },
        );
      }
    });
  }

  /**
   * Restore from `stateDict()` output: `momentum_buffer.<i>` for each Muon parameter and
   * `exp_avg.<i>`/`exp_avg_sq.<i>` for each AdamW one. `like` (the parameters, in the order
   * `step` gets them) is needed to tell which is which when the state is not empty.
   */
  override loadStateDict(state: OptimizerStateInput, like?: readonly Tensor[]): void {
    checkInt("optimizer step", state?.step, 0);
    const entries = Object.entries(state.tensors ?? {});
    const next = new Map<string, Tensor[]>(this.slotNames.map((n) => [n, []]));
    if (entries.length && !like) {
      throw new TypeError("Muon.loadStateDict needs the parameters (like) to restore its state");
    }
    try {
      for (const [k, t] of entries) {
        const mt = /^(.+)\.(\d+)$/.exec(k);
        const i = mt ? Number(mt[2]) : -1;
        if (!mt || !this.slotNames.includes(mt[1]!) || i >= like!.length) {
          throw new RangeError(
            `Unexpected optimizer state "${k}": expected "momentum_buffer.<i>", "exp_avg.<i>" ` +
              `or "exp_avg_sq.<i>" with i < ${like!.length}`,
          );
        }
        if ((mt[1] === "momentum_buffer") !== this.isMuon(like!, i)) {
          throw new RangeError(
            `Optimizer state "${k}" does not fit parameter ${i} (${fmtShape(like![i]!.shape)}), ` +
              `which takes the ${this.isMuon(like!, i) ? "Muon" : "AdamW"} update`,
          );
        }
        next.get(mt[1]!)![i] = keep(copyState(t, like![i]!, k));
      }
      if (entries.length) {
        like!.forEach((_, i) => {
          const need = this.isMuon(like!, i) ? ["momentum_buffer"] : ["exp_avg", "exp_avg_sq"];
          for (const n of need) {
            if (!next.get(n)![i]) throw new RangeError(`Missing optimizer state "${n}.${i}"`);
          }
        });
      }
    } catch (e) {
      for (const ts of next.values()) ts.forEach((t) => t.dispose());
      throw e;
    }
    this.dispose();
    if (entries.length) { for (const [k, v] of next) this.slots.set(k, v); }
    this.stepCount = state.step;
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
