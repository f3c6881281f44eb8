/**
 * @file The `Module` base class: named parameters and buffers with PyTorch-style dotted
 * names, state dicts that load all-or-nothing, train/eval mode, and `Sequential`.
 * @module
 */
import { Tensor } from "../tensor.ts";
import { tensor, unary } from "../ops/ops.ts";
import { fmtShape } from "../_util.ts";

/** A state-dict entry: a tensor, or host data with its shape (e.g. from `decodeSafetensors`). */
export type StateDictValue = Tensor | { shape: readonly number[]; data: Float32Array };

/** Options of `Module.loadStateDict`. */
export interface LoadStateDictOptions {
  /** Reject missing and unexpected names (default true). Shapes are always checked. */
  strict?: boolean;
}

/**
 * Base class of layers and models. Subclasses register parameters with `param`, fixed
 * tensors (e.g. positional tables) with `buffer` and children with `module`; names join
 * with dots the way `torch.nn.Module.named_parameters` does (`blocks.0.attn.qkv.weight`).
 * Parameters are plain tensors that optimizers update in place (`Tensor._assign`), so
 * `valueAndGrad(() => loss(model), model.parameters())` differentiates through the module.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * class Scale extends nn.Module {
 *   w = this.param("w", tensor([2]));
 *   forward(x: ReturnType<typeof tensor>) { return x.mul(this.w); }
 * }
 * const m = new Scale();
 * assert.deepEqual([...m.namedParameters().keys()], ["w"]);
 * assert.equal(m.numParameters(), 1);
 * assert.deepEqual([...await m.forward(tensor([3])).data()], [6]);
 * ```
 */
export class Module {
  #params = new Map<string, Tensor>();
  #buffers = new Map<string, Tensor>();
  #children = new Map<string, Module>();
  /** Training mode (dropout and label dropout are active); see `train()` / `eval()`. */
  training = true;

  /** Register a trainable tensor under `name` and return it. */
  protected param(name: string, t: Tensor): Tensor {
    this.#checkName(name);
    this.#params.set(name, t);
    return t;
  }

  /** Register a non-trainable tensor (saved in the state dict, not optimized). */
  protected buffer(name: string, t: Tensor): Tensor {
    this.#checkName(name);
    this.#buffers.set(name, t);
    return t;
  }

  /** Register a child module under `name` and return it. */
  protected module<M extends Module>(name: string, m: M): M {
    this.#checkName(name);
    this.#children.set(name, m);
    return m;
  }

  #checkName(name: string): void {
    if (name === "" || name.includes(".")) {
      throw new RangeError(`Expected a module member name without dots but found "${name}"`);
    }
    if (this.#params.has(name) || this.#buffers.has(name) || this.#children.has(name)) {
      throw new RangeError(`The name "${name}" is already registered on this module`);
    }
  }

  /** Child modules in registration order. */
  namedChildren(): Map<string, Module> {
    return new Map(this.#children);
  }

  /** This module and all descendants with their dotted paths ("" for this one). */
  namedModules(prefix = ""): Map<string, Module> {
    const out = new Map<string, Module>([[prefix, this]]);
    for (const [n, c] of this.#children) {
      for (const [k, v] of c.namedModules(prefix ? `${prefix}.${n}` : n)) out.set(k, v);
    }
    return out;
  }

  /** Trainable tensors by dotted name, in registration order (depth first). */
  namedParameters(prefix = ""): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [n, p] of this.#params) out.set(prefix ? `${prefix}.${n}` : n, p);
    for (const [n, c] of this.#children) {
      for (const [k, v] of c.namedParameters(prefix ? `${prefix}.${n}` : n)) out.set(k, v);
    }
    return out;
  }

  /** Buffers by dotted name. */
  namedBuffers(prefix = ""): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [n, p] of this.#buffers) out.set(prefix ? `${prefix}.${n}` : n, p);
    for (const [n, c] of this.#children) {
      for (const [k, v] of c.namedBuffers(prefix ? `${prefix}.${n}` : n)) out.set(k, v);
    }
    return out;
  }

  /** Trainable tensors in the order of `namedParameters`. */
  parameters(): Tensor[] {
    return [...this.namedParameters().values()];
  }

  /** Total number of trainable scalars. */
  numParameters(): number {
    return this.parameters().reduce((a, p) => a + p.size, 0);
  }

  /**
   * Parameters and buffers by dotted name. The values are the live tensors (not copies):
   * read or serialise them, do not dispose them.
   */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [k, v] of this.namedParameters()) out[k] = v;
    for (const [k, v] of this.namedBuffers()) out[k] = v;
    return out;
  }

  /**
   * Copy values into the parameters and buffers. Every name and shape is validated first,
   * so on error nothing has been assigned. Tensors given here are copied, not adopted.
   */
  loadStateDict(dict: Record<string, StateDictValue>, opts: LoadStateDictOptions = {}): void {
    const strict = opts.strict ?? true;
    if (!dict || typeof dict !== "object") {
      throw new TypeError(`Expected a state dict object but found ${dict}`);
    }
    const own = this.stateDict();
    const missing = Object.keys(own).filter((k) => !(k in dict));
    const unexpected = Object.keys(dict).filter((k) => !(k in own));
    if (strict && (missing.length || unexpected.length)) {
      const parts = [];
      if (missing.length) parts.push(`missing ${missing.map((k) => `"${k}"`).join(", ")}`);
      if (unexpected.length) {
        parts.push(`unexpected ${unexpected.map((k) => `"${k}"`).join(", ")}`);
      }
      throw new RangeError(`Cannot load state dict: ${parts.join("; ")}`);
    }
    const plan: [Tensor, StateDictValue][] = [];
    for (const [k, target] of Object.entries(own)) {
      if (!(k in dict)) continue;
      const v = dict[k]!;
      let shape: readonly number[];
      if (v instanceof Tensor) {
        if (v.isDisposed) throw new TypeError(`State dict tensor "${k}" was disposed`);
        if (v.backend !== target.backend) {
          throw new TypeError(
            `State dict tensor "${k}" is on the ${v.backend.name} backend but the module is on ` +
              `${target.backend.name}; move it with toBackend()`,
          );
        }
        shape = v.shape;
      } else if (v && Array.isArray(v.shape) && v.data instanceof Float32Array) {
        shape = v.shape;
        const n = shape.reduce((a, b) => a * b, 1);
        if (n !== v.data.length) {
          throw new RangeError(
            `State dict entry "${k}" has shape ${fmtShape(shape)} but ${v.data.length} values`,
          );
        }
      } else {
        throw new TypeError(
          `Expected state dict entry "${k}" to be a Tensor or {shape, data: Float32Array}`,
        );
      }
      if (shape.length !== target.rank || shape.some((d, i) => d !== target.shape[i])) {
        throw new RangeError(
          `Cannot load "${k}": shape ${fmtShape(shape)} in the state dict vs ${
            fmtShape(target.shape)
          } in the module`,
        );
      }
      plan.push([target, v]);
    }
    for (const [target, v] of plan) {
      const copy = v instanceof Tensor
        ? unary("copy", v)
        : tensor(v.data, target.shape, target.backend);
      target._assign(copy);
    }
  }

  /** Set training mode on this module and all descendants (returns this). */
  train(mode = true): this {
    for (const m of this.namedModules().values()) m.training = mode;
    return this;
  }

  /** Evaluation mode: `train(false)`. */
  eval(): this {
    return this.train(false);
  }

  /** Free every parameter and buffer. */
  dispose(): void {
    for (const t of Object.values(this.stateDict())) t.dispose();
  }
}

/**
 * A module that applies its children in order; children are named "0", "1", … like
 * `torch.nn.Sequential`, so parameterless members (activations) keep PyTorch's numbering.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const net = new nn.Sequential([new nn.Linear(2, 4, { seed: 0 }), new nn.SiLU(), new nn.Linear(4, 1, { seed: 1 })]);
 * const y = net.forward(randn([3, 2], { seed: 2 }));
 * assert.deepEqual([...y.shape], [3, 1]);
 * // PyTorch's nn.Sequential names: the index of the layer, then the parameter
 * assert.deepEqual([...net.namedParameters().keys()], ["0.weight", "0.bias", "2.weight", "2.bias"]);
 * ```
 */
export class Sequential extends Module {
  /** The members in order. */
  readonly layers: readonly Module[];
  /** Create a Sequential; the options are described on the class and its options type. */
  constructor(layers: readonly Module[]) {
    super();
    this.layers = [...layers];
    this.layers.forEach((m, i) => this.module(String(i), m));
  }
  /** The i-th member. */
  at(i: number): Module {
    const m = this.layers[i];
    if (!m) throw new RangeError(`Sequential has ${this.layers.length} members; no index ${i}`);
    return m;
  }
  /** Apply every member that has a one-argument `forward`. */
  forward(x: Tensor): Tensor {
    let h = x;
    for (const m of this.layers) h = (m as unknown as { forward(x: Tensor): Tensor }).forward(h);
    return h;
  }
}
