/**
 * @file Exponential moving average of parameters, for sampling with smoothed weights.
 * @module
 */
import { keep, Tensor, tidy } from "../tensor.ts";
import { fusedGroups, fx, tensor, unary } from "../ops/mod.ts";
import { checkInt, checkNumber, fmtShape } from "../_util.ts";
import { captureHooks } from "../capture.ts";

/** Something holding parameters: a tensor list, or a module. */
export type ParamSource = readonly Tensor[] | { parameters(): Tensor[] };

/** Host data accepted by the `loadStateDict` methods (e.g. from a decoded checkpoint). */
export type StateTensor = Tensor | { shape: readonly number[]; data: Float32Array };

/** @internal A fresh tensor holding `v` on `like`'s backend. */
export function copyState(v: StateTensor, like: Tensor, name: string): Tensor {
  const shape = v instanceof Tensor ? v.shape : v?.shape;
  if (!shape || shape.length !== like.rank || shape.some((d, i) => d !== like.shape[i])) {
    throw new RangeError(
      `State "${name}" has shape ${shape ? fmtShape(shape) : String(v)} but expected ${
        fmtShape(like.shape)
      }`,
    );
  }
  if (v instanceof Tensor) {
    if (v.backend === like.backend) return unary("copy", v);
    throw new TypeError(`State "${name}" is on the ${v.backend.name} backend; move it first`);
  }
  if (!(v.data instanceof Float32Array) || v.data.length !== like.size) {
    throw new TypeError(
      `Expected state "${name}" data to be a Float32Array of ${like.size} values`,
    );
  }
  return tensor(v.data, like.shape, like.backend);
}

function paramsOf(src: ParamSource): readonly Tensor[] {
  return Array.isArray(src) ? src : (src as { parameters(): Tensor[] }).parameters();
}

/** Options of `EMA`. */
export interface EMAOptions {
  /** Target decay d (default 0.9999, SV; FB uses 0.999). */
  decay?: number;
  /**
   * Warm the decay up as min(d, (1 + n)/(10 + n)) with n the number of updates including
   * this one (FB `examples/image/models/ema.py`, SV) — default true. False: fixed d (REPA).
   */
  warmup?: boolean;
}

/** EMA state for checkpoints, as `stateDict()` returns it. */
export interface EMAState {
  /** Updates applied. */
  numUpdates: number;
  /** Shadow tensors by parameter index (`shadow.<i>`). */
  tensors: Record<string, Tensor>;
}

/** EMA state accepted by `loadStateDict`: keys `shadow.<i>` or the parameter names. */
export interface EMAStateInput {
  /** Updates applied. */
  numUpdates: number;
  /** Shadow values by `shadow.<i>` or by parameter name; tensors or host data. */
  tensors: Record<string, StateTensor>;
}

/**
 * Shadow copies s of parameters p, updated as s ← d·s + (1 − d)·p (one fused kernel for all
 * parameters, d a constant read from a parameter word so the kernel is reused as d warms up).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, optim, tensor } from "../../mod.ts";
 * const net = new nn.Linear(1, 1);
 * net.loadStateDict({ weight: tensor([[1]]), bias: tensor([0]) });
 * const ema = new optim.EMA(net, { decay: 0.999 });
 * net.loadStateDict({ weight: tensor([[3]]), bias: tensor([0]) }); // an optimizer step
 * ema.update(net); // warm-up decay min(0.999, (1 + 1)/(10 + 1)) = 2/11
 * const s = 2 / 11 * 1 + 9 / 11 * 3;
 * assert.ok(Math.abs((await ema.shadow[0]!.data())[0]! - s) < 1e-6);
 * ema.swapInto(net); // sample with the EMA weights …
 * assert.ok(Math.abs((await net.weight.data())[0]! - s) < 1e-6);
 * ema.swapInto(net); // … and swap back
 * assert.equal((await net.weight.data())[0], 3);
 * assert.equal(ema.numUpdates, 1);
 * assert.ok(Math.abs(ema.currentDecay() - 3 / 12) < 1e-12); // (1 + 2)/(10 + 2) next
 * ```
 */
export class EMA {
  /** Target decay. */
  readonly decay: number;
  /** Whether the warm-up formula is used. */
  readonly warmup: boolean;
  /** Updates applied so far. */
  numUpdates = 0;
  /** The shadow tensors, in parameter order. */
  readonly shadow: Tensor[];
  /** Names of the shadows: the module's parameter names, or "0", "1", … for a list. */
  readonly names: string[];

  /** Shadows start as copies of `params` (a module's parameters, or a list). */
  constructor(params: ParamSource, opts: EMAOptions = {}) {
    this.decay = checkNumber("EMA decay", opts.decay ?? 0.9999, 0, 1);
    this.warmup = opts.warmup ?? true;
    this.shadow = paramsOf(params).map((p) => keep(unary("copy", p)));
    this.names = Array.isArray(params) ? this.shadow.map((_, i) => String(i)) : [
      ...(params as { namedParameters?(): Map<string, Tensor> }).namedParameters?.().keys() ??
        this.shadow.map((_, i) => String(i)),
    ];
  }

  /** The decay the next `update` will use. */
  currentDecay(): number {
    const n = this.numUpdates + 1;
    return this.warmup ? Math.min(this.decay, (1 + n) / (10 + n)) : this.decay;
  }

  #check(ps: readonly Tensor[]): void {
    if (ps.length !== this.shadow.length) {
      throw new RangeError(
        `EMA tracks ${this.shadow.length} parameters but was given ${ps.length}`,
      );
    }
    ps.forEach((p, i) => {
      const s = this.shadow[i]!;
      if (p.size !== s.size) {
        throw new RangeError(
          `EMA parameter ${i} has shape ${fmtShape(p.shape)} but its shadow has ${
            fmtShape(s.shape)
          }`,
        );
      }
    });
  }

  /** Fold the current parameters into the average. */
  update(params: ParamSource): void {
    const ps = paramsOf(params);
    this.#check(ps);
    let d = this.currentDecay();
    this.numUpdates++;
    // Inside a captured step a replay redoes the count and the warm-up decay.
    const hooks = captureHooks();
    hooks?.host(() => {
      d = this.currentDecay();
      this.numUpdates++;
    });
    if (ps.length === 0) return;
    // Every shadow in one kernel (see `fusedGroups`), written in place; the decay is a
    // constant, which WebGPU reads from a parameter word, so one pipeline serves every step.
    tidy(() => {
      fusedGroups(
        ps.map((p, i) => [this.shadow[i]!, p]),
        [],
        (s, p) => {
          const dc = hooks ? fx.const(d, () => d) : fx.const(d);
          return s!.mul(dc).add(p!.mul(dc.affine(-1, 1)));
        },
        { into: [0] },
      );
    });
  }

  /** Overwrite the parameters with the shadow values. */
  copyTo(params: ParamSource): void {
    const ps = paramsOf(params);
    this.#check(ps);
    ps.forEach((p, i) => p._assign(unary("copy", this.shadow[i]!)));
  }

  /** Exchange parameters and shadows (call twice to restore). */
  swapInto(params: ParamSource): void {
    const ps = paramsOf(params);
    this.#check(ps);
    ps.forEach((p, i) => {
      const s = this.shadow[i]!;
      const old = unary("copy", p);
      p._assign(unary("copy", s));
      s._assign(old);
    });
  }

  /** State for a checkpoint (live tensors, keyed `shadow.<i>`). */
  stateDict(): EMAState {
    const tensors: Record<string, Tensor> = {};
    this.shadow.forEach((s, i) => (tensors[`shadow.${i}`] = s));
    return { numUpdates: this.numUpdates, tensors };
  }

  /**
   * The shadows keyed by parameter name (the module's names when built from a module), so
   * the EMA weights save like a model state dict (as DiT's `ema` entry) and load into a
   * model with `loadStateDict`.
   */
  namedShadows(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    this.shadow.forEach((s, i) => (out[this.names[i]!] = s));
    return out;
  }

  /**
   * Restore from `stateDict()` output, or from shadows keyed by parameter name
   * (`namedShadows()`). Copied; every entry is validated before anything is assigned.
   */
  loadStateDict(state: EMAStateInput): void {
    checkInt("EMA numUpdates", state?.numUpdates, 0);
    const given = state.tensors ?? {};
    const byIndex = Object.keys(given).some((k) => /^shadow\.\d+$/.test(k));
    const keys = this.shadow.map((_, i) => (byIndex ? `shadow.${i}` : this.names[i]!));
    const extra = Object.keys(given).filter((k) => !keys.includes(k));
    if (extra.length) {
      throw new RangeError(`Unexpected EMA state ${extra.map((k) => `"${k}"`).join(", ")}`);
    }
    const copies: Tensor[] = [];
    try {
      this.shadow.forEach((s, i) => {
        const name = keys[i]!;
        const v = given[name];
        if (!v) throw new RangeError(`Missing EMA state "${name}"`);
        copies.push(copyState(v, s, name));
      });
    } catch (e) {
      copies.forEach((c) => c.dispose());
      throw e;
    }
    copies.forEach((c, i) => this.shadow[i]!._assign(c));
    this.numUpdates = state.numUpdates;
  }

  /** Free the shadows. */
  dispose(): void {
    this.shadow.forEach((s) => s.dispose());
  }
}
