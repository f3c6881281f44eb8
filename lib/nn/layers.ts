/**
 * @file Layers with PyTorch weight layouts and default initialisation: Linear, MLP,
 * activations, LayerNorm, Dropout, Embedding, label and timestep embedders, the DiT/timm
 * feed-forward, and Conv2d (im2col as one gather + one matmul).
 * @module
 */
import { keep, type Tensor } from "../tensor.ts";
import {
  concat,
  cos,
  full,
  gather,
  gelu,
  layerNorm,
  less,
  matmul,
  pad,
  relu,
  reshape,
  silu,
  sin,
  tanh,
  tensor,
  transpose,
  unary,
  where,
  zeros,
} from "../ops/ops.ts";
import { feedForward, linear, type LinearActivation } from "../ops/linear.ts";
import { Generator, rand, randn, type RandomOptions } from "../random.ts";
import { checkChoice, checkInt, checkNumber, fmtShape } from "../_util.ts";
import { Module, Sequential } from "./module.ts";

// ---------------------------------------------------------------- initialisation

/**
 * The generator a module draws from: a fresh one for `seed`, the given `generator`, or
 * `undefined` for the global generator (so `manualSeed` applies).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, nn } from "../../mod.ts";
 * const g = nn.generatorOf({ seed: 3 });
 * assert.deepEqual([...g!.uniformHost(2)], [...new Generator(3).uniformHost(2)]);
 * assert.equal(nn.generatorOf({}), undefined); // no seed: the global generator is used
 * ```
 */
export function generatorOf(opts: RandomOptions = {}): Generator | undefined {
  if (opts.generator) return opts.generator;
  if (opts.seed !== undefined) return new Generator(opts.seed);
  return undefined;
}

function ro(g: Generator | undefined): RandomOptions {
  return g ? { generator: g } : {};
}

/**
 * Replace `t`'s values with U(−bound, bound) draws (in place).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, rand, zeros } from "../../mod.ts";
 * const w = zeros([3, 2]);
 * nn.initUniform(w, 0.5, { seed: 0 });
 * // U(−0.5, 0.5): 2·0.5·u − 0.5 for the seed's uniforms u
 * const u = await rand([3, 2], { seed: 0 }).data();
 * (await w.data()).forEach((v, i) => assert.ok(Math.abs(v - (u[i]! - 0.5)) < 1e-6));
 * ```
 */
export function initUniform(t: Tensor, bound: number, opts: RandomOptions = {}): Tensor {
  const u = rand(t.shape, ro(generatorOf(opts)));
  t._assign(unary("affine", u, 2 * bound, -bound));
  u.dispose();
  return t;
}

/**
 * Replace `t`'s values with N(0, std²) draws (in place).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, zeros } from "../../mod.ts";
 * const w = await nn.initNormal(zeros([2000]), 0.02, { seed: 0 }).data();
 * // The sample std of 2000 draws is within 4·√(1/4000) relative of 0.02.
 * const sd = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
 * assert.ok(Math.abs(sd / 0.02 - 1) < 4 * Math.sqrt(1 / 4000), `std ${sd}`);
 * ```
 */
export function initNormal(t: Tensor, std: number, opts: RandomOptions = {}): Tensor {
  const z = randn(t.shape, ro(generatorOf(opts)));
  t._assign(unary("affine", z, std, 0));
  z.dispose();
  return t;
}

/**
 * Xavier/Glorot uniform (in place): U(±√(6/(fanIn+fanOut))), with fanIn = shape[1]·receptive
 * field and fanOut = shape[0]·receptive field as in `torch.nn.init.xavier_uniform_`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, zeros } from "../../mod.ts";
 * const w = await nn.initXavierUniform(zeros([8, 4]), { seed: 0 }).data();
 * // U(−a, a) with a = √(6/(fan_in + fan_out)) = √(6/12)
 * const a = Math.sqrt(6 / 12);
 * assert.ok(w.every((v) => Math.abs(v) <= a));
 * assert.ok(Math.max(...w.map(Math.abs)) > a / 2); // 32 draws all below a/2: p = 2^-32
 * ```
 */
export function initXavierUniform(t: Tensor, opts: RandomOptions = {}): Tensor {
  if (t.rank < 2) {
    throw new RangeError(`Xavier init needs a tensor of rank >= 2 but found ${fmtShape(t.shape)}`);
  }
  const rf = t.shape.slice(2).reduce((a, b) => a * b, 1);
  const fanIn = t.shape[1]! * rf, fanOut = t.shape[0]! * rf;
  return initUniform(t, Math.sqrt(6 / (fanIn + fanOut)), opts);
}

/**
 * Set all values of `t` to a constant (in place).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, ones } from "../../mod.ts";
 * assert.deepEqual([...await nn.initConstant(ones([3]), 0).data()], [0, 0, 0]);
 * ```
 */
export function initConstant(t: Tensor, value: number): Tensor {
  t._assign(full(t.shape, value, t.backend));
  return t;
}

// ---------------------------------------------------------------- activations

/**
 * Names accepted wherever an activation is chosen.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * assert.ok(nn.ACTIVATIONS.includes("silu"));
 * assert.ok(nn.ACTIVATIONS.includes("gelu_tanh"));
 * ```
 */
export const ACTIVATIONS = [
  "silu",
  "gelu",
  "gelu_tanh",
  "relu",
  "tanh",
  "selu",
  "identity",
] as const;
/** An activation name. */
export type ActivationName = typeof ACTIVATIONS[number];

/**
 * GELU with the tanh approximation (`torch.nn.GELU(approximate="tanh")`, used by DiT):
 * ½x(1 + tanh(√(2/π)(x + 0.044715x³))), as one elementwise op (`unary("geluTanh", x)`) with its
 * own derivative.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const y = await nn.geluTanh(tensor([0, 1])).data();
 * // ½x(1 + tanh(√(2/π)(x + 0.044715x³)))
 * const g = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
 * [0, 1].forEach((x, i) => assert.ok(Math.abs(y[i]! - g(x)) < 1e-6));
 * ```
 */
export function geluTanh(x: Tensor): Tensor {
  // One row of the op table, because DiT runs it in every MLP block: one kernel forward and one
  // backward, where the formula in tensor ops ran eight kernels (an output array each) forward,
  // as many rules backward, and eight tape nodes.
  return unary("geluTanh", x);
}

const SELU_ALPHA = 1.6732632423543772;
const SELU_SCALE = 1.0507009873554805;

/**
 * SELU, scale·(max(0, x) + min(0, α(eˣ − 1))) with PyTorch's constants.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const y = await nn.selu(tensor([-1, 1])).data();
 * // λ·x for x > 0, λα(eˣ − 1) otherwise (Klambauer et al. 2017 constants)
 * const lam = 1.0507009873554805, alpha = 1.6732632423543772;
 * assert.ok(Math.abs(y[0]! - lam * alpha * (Math.exp(-1) - 1)) < 1e-6);
 * assert.ok(Math.abs(y[1]! - lam) < 1e-6);
 * ```
 */
export function selu(x: Tensor): Tensor {
  const neg = unary("affine", x.minimum(0).exp(), SELU_ALPHA, -SELU_ALPHA);
  return unary("affine", relu(x).add(neg), SELU_SCALE, 0);
}

/**
 * Apply an activation by name.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const y = await nn.applyActivation("silu", tensor([1, -1])).data();
 * // x·σ(x)
 * [1, -1].forEach((x, i) => assert.ok(Math.abs(y[i]! - x / (1 + Math.exp(-x))) < 1e-6));
 * ```
 */
export function applyActivation(name: ActivationName, x: Tensor): Tensor {
  switch (name) {
    case "silu":
      return silu(x);
    case "gelu":
      return gelu(x);
    case "gelu_tanh":
      return geluTanh(x);
    case "relu":
      return relu(x);
    case "tanh":
      return tanh(x);
    case "selu":
      return selu(x);
    case "identity":
      return x;
  }
}

/**
 * An activation as a parameterless module (so `Sequential` numbering matches PyTorch).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const act = new nn.Activation("gelu");
 * const y = await act.forward(tensor([0.5])).item();
 * // exact GELU x·Φ(x); Φ(0.5) = 0.6914624612740131
 * assert.ok(Math.abs(y - 0.5 * 0.6914624612740131) < 2e-6);
 * ```
 */
export class Activation extends Module {
  /** The activation's name. */
  readonly kind: ActivationName;
  /** Create a Activation; the options are described on the class and its options type. */
  constructor(kind: string) {
    super();
    this.kind = checkChoice("activation", kind, ACTIVATIONS);
  }
  /** Apply it. */
  forward(x: Tensor): Tensor {
    return applyActivation(this.kind, x);
  }
}

/**
 * `torch.nn.SiLU`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const y = await new nn.SiLU().forward(tensor([1])).item();
 * assert.ok(Math.abs(y - 1 / (1 + Math.exp(-1))) < 1e-6);
 * ```
 */
export class SiLU extends Activation {
  constructor() {
    super("silu");
  }
}

/**
 * `torch.nn.GELU` (exact erf form; pass `"tanh"` for the approximation).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const y = await new nn.GELU("tanh").forward(tensor([1])).item();
 * assert.ok(Math.abs(y - 0.5 * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * 1.044715))) < 1e-6);
 * ```
 */
export class GELU extends Activation {
  /** Create a GELU; the options are described on the class and its options type. */
  constructor(approximate: "none" | "tanh" = "none") {
    super(approximate === "tanh" ? "gelu_tanh" : "gelu");
  }
}

// ---------------------------------------------------------------- linear

/** Options of `Linear`. */
export interface LinearOptions extends RandomOptions {
  /** Add a bias (default true). */
  bias?: boolean;
  /** Applied to the output, fused into the matmul (default none); adds no parameters. */
  activation?: LinearActivation | null;
}

// nn activations that `linear` can fuse into its matmul epilogue (same unary op).
const FUSABLE: Partial<Record<ActivationName, LinearActivation>> = {
  silu: "silu",
  gelu: "gelu",
  gelu_tanh: "geluTanh",
  relu: "relu",
  tanh: "tanh",
};

/**
 * y = x·Wᵀ + b with W of shape [out, in] (PyTorch layout) and PyTorch's default init:
 * W and b ~ U(±1/√in) (kaiming-uniform with a = √5). Inputs of any rank ≥ 1; the last axis
 * has `inFeatures` entries. With `opts.activation`, y = act(x·Wᵀ + b), one fused op
 * (`linear`): on WebGPU the whole layer is one dispatch.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const lin = new nn.Linear(3, 2, { seed: 0 });
 * const x = randn([5, 3], { seed: 1 });
 * const y = await lin.forward(x).data();
 * assert.equal(y.length, 5 * 2);
 * // y = x·Wᵀ + b with W [out, in] as in PyTorch
 * const [X, W, B] = [await x.data(), await lin.weight.data(), await lin.bias!.data()];
 * for (let i = 0; i < 5; i++) {
 *   for (let o = 0; o < 2; o++) {
 *     const want = B[o]! + X[3 * i]! * W[3 * o]! + X[3 * i + 1]! * W[3 * o + 1]! + X[3 * i + 2]! * W[3 * o + 2]!;
 *     assert.ok(Math.abs(y[2 * i + o]! - want) < 1e-5);
 *   }
 * }
 * ```
 */
export class Linear extends Module {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  /** [out, in]. */
  readonly weight: Tensor;
  /** [out], or undefined without bias. */
  readonly bias: Tensor | undefined;
  /** Activation applied to the output, or null. */
  readonly activation: LinearActivation | null;
  /** Create a Linear; the options are described on the class and its options type. */
  constructor(inFeatures: number, outFeatures: number, opts: LinearOptions = {}) {
    super();
    this.activation = opts.activation == null ? null : checkChoice(
      "Linear activation",
      opts.activation,
      ["silu", "gelu", "geluTanh", "relu", "tanh", "sigmoid"] as const,
    );
    this.inFeatures = checkInt("inFeatures", inFeatures, 1);
    this.outFeatures = checkInt("outFeatures", outFeatures, 1);
    const g = generatorOf(opts);
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.param("weight", initUniform(zeros([outFeatures, inFeatures]), bound, ro(g)));
    this.bias = (opts.bias ?? true)
      ? this.param("bias", initUniform(zeros([outFeatures]), bound, ro(g)))
      : undefined;
  }
  /**
   * Apply the layer; `activation` (default: the layer's own) is fused into the matmul.
   * Passing one lets a `Sequential` keep its separate activation modules, and so its
   * PyTorch parameter numbering, while running each Linear + activation as one op.
   */
  forward(x: Tensor, activation: LinearActivation | null = this.activation): Tensor {
    const d = x.shape[x.rank - 1];
    if (d !== this.inFeatures) {
      throw new RangeError(
        `Linear(${this.inFeatures}, ${this.outFeatures}) got an input of shape ${
          fmtShape(x.shape)
        }: expected the last axis to be ${this.inFeatures}`,
      );
    }
    // linear folds leading axes into rows itself, so the weight gradient is one matmul.
    return linear(x, this.weight, this.bias ?? null, { activation });
  }
}

/**
 * Run `layers[from..]` in order, fusing each `Activation` that directly follows a `Linear`
 * (and that `linear` supports) into that Linear's matmul: one op instead of three.
 * @internal Shared by `MLP` and `VelocityMLP`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Activation, forwardFusingActivations, Linear } from "./layers.ts";
 * import { randn } from "../../mod.ts";
 * const layers = [new Linear(2, 4, { seed: 0 }), new Activation("silu"), new Linear(4, 1, { seed: 1 })];
 * const x = randn([3, 2], { seed: 2 });
 * const y = forwardFusingActivations(layers, x);
 * assert.deepEqual([...y.shape], [3, 1]);
 * // the same as running the layers one by one
 * const ref = await layers[2]!.forward(layers[1]!.forward(layers[0]!.forward(x))).data();
 * (await y.data()).forEach((v, i) => assert.ok(Math.abs(v - ref[i]!) < 1e-6));
 * ```
 */
export function forwardFusingActivations(
  layers: readonly Module[],
  x: Tensor,
  from = 0,
): Tensor {
  let h = x;
  for (let i = from; i < layers.length; i++) {
    const m = layers[i]!, next = layers[i + 1];
    if (
      m instanceof Linear && m.activation === null && next instanceof Activation &&
      FUSABLE[next.kind]
    ) {
      h = m.forward(h, FUSABLE[next.kind]!);
      i++;
    } else {
      h = (m as unknown as { forward(x: Tensor): Tensor }).forward(h);
    }
  }
  return h;
}

/**
 * A multilayer perceptron: Linear layers between consecutive `sizes`, with the activation
 * between them (none after the last). Names follow `nn.Sequential`: `0.weight`, `2.weight`, ….
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const mlp = new nn.MLP([2, 16, 16, 1], "silu", { seed: 0 });
 * assert.deepEqual([...mlp.forward(randn([4, 2], { seed: 1 })).shape], [4, 1]);
 * assert.equal(mlp.numParameters(), (2 * 16 + 16) + (16 * 16 + 16) + (16 * 1 + 1)); // 337
 * ```
 */
export class MLP extends Sequential {
  /** Create a MLP; the options are described on the class and its options type. */
  constructor(sizes: readonly number[], activation: string = "silu", opts: RandomOptions = {}) {
    if (!Array.isArray(sizes) || sizes.length < 2) {
      throw new RangeError(`Expected MLP sizes to list at least 2 widths but found [${sizes}]`);
    }
    sizes.forEach((s, i) => checkInt(`sizes[${i}]`, s, 1));
    checkChoice("activation", activation, ACTIVATIONS);
    const g = generatorOf(opts);
    const layers: Module[] = [];
    for (let i = 0; i + 1 < sizes.length; i++) {
      layers.push(new Linear(sizes[i]!, sizes[i + 1]!, ro(g)));
      if (i + 2 < sizes.length) layers.push(new Activation(activation));
    }
    super(layers);
  }
  /** Apply the layers, each hidden Linear and its activation as one fused op. */
  override forward(x: Tensor): Tensor {
    return forwardFusingActivations(this.layers, x);
  }
}

/**
 * The feed-forward of a transformer block with timm's names (`fc1`, `fc2`), as DiT uses:
 * fc2(act(fc1(x))).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const ff = new nn.FeedForward(8, 32, "gelu_tanh", { seed: 0 });
 * assert.deepEqual([...ff.forward(randn([2, 3, 8], { seed: 1 })).shape], [2, 3, 8]);
 * assert.equal(ff.numParameters(), 8 * 32 + 32 + 32 * 8 + 8);
 * ```
 */
export class FeedForward extends Module {
  /** First projection. */
  readonly fc1: Linear;
  /** The activation. */
  readonly act: Activation;
  /** Second projection. */
  readonly fc2: Linear;
  /** Create a FeedForward; the options are described on the class and its options type. */
  constructor(dim: number, hidden: number, activation: string = "gelu", opts: RandomOptions = {}) {
    super();
    const g = generatorOf(opts);
    this.fc1 = this.module("fc1", new Linear(dim, hidden, ro(g)));
    this.act = this.module("act", new Activation(activation));
    this.fc2 = this.module("fc2", new Linear(hidden, dim, ro(g)));
  }
  /**
   * Apply it: one `feedForward` op when `linear` supports the activation (under a tape the
   * activation's derivative is computed with it and the backward pass needs no separate
   * elementwise pass), else the three modules in turn.
   */
  forward(x: Tensor): Tensor {
    const act = FUSABLE[this.act.kind];
    if (act && this.fc1.activation === null && this.fc2.activation === null) {
      if (x.shape[x.rank - 1] !== this.fc1.inFeatures) return this.fc1.forward(x); // its error
      const { fc1, fc2 } = this;
      return feedForward(x, fc1.weight, fc1.bias ?? null, fc2.weight, fc2.bias ?? null, {
        activation: act,
      });
    }
    return this.fc2.forward(this.act.forward(this.fc1.forward(x)));
  }
}

// ---------------------------------------------------------------- normalisation, dropout

/** Options of `LayerNorm`. */
export interface LayerNormOptions {
  /** Added to the variance (default 1e-5, PyTorch's; DiT uses 1e-6). */
  eps?: number;
  /** Learn a weight (init 1) and bias (init 0) (default true; AdaLN blocks use false). */
  elementwiseAffine?: boolean;
}

/**
 * Layer normalisation over the last axis.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const ln = new nn.LayerNorm(4, { elementwiseAffine: false, eps: 1e-6 });
 * const y = await ln.forward(randn([2, 4], { seed: 0 })).data();
 * // Each row: mean 0, (biased) variance v/(v + eps) ≈ 1.
 * for (const r of [y.subarray(0, 4), y.subarray(4)]) {
 *   const m = r.reduce((s, v) => s + v, 0) / 4;
 *   assert.ok(Math.abs(m) < 1e-5);
 *   assert.ok(Math.abs(r.reduce((s, v) => s + (v - m) ** 2, 0) / 4 - 1) < 1e-3);
 * }
 * ```
 */
export class LayerNorm extends Module {
  /** Normalised width. */
  readonly dim: number;
  /** Variance epsilon. */
  readonly eps: number;
  /** Scale (ones), when affine. */
  readonly weight: Tensor | undefined;
  /** Shift (zeros), when affine. */
  readonly bias: Tensor | undefined;
  /** Create a LayerNorm; the options are described on the class and its options type. */
  constructor(dim: number, opts: LayerNormOptions = {}) {
    super();
    this.dim = checkInt("dim", dim, 1);
    this.eps = checkNumber("eps", opts.eps ?? 1e-5, 0);
    if (opts.elementwiseAffine ?? true) {
      this.weight = this.param("weight", full([dim], 1));
      this.bias = this.param("bias", zeros([dim]));
    }
  }
  /** Normalise. */
  forward(x: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.dim) {
      throw new RangeError(
        `LayerNorm(${this.dim}) got an input of shape ${fmtShape(x.shape)}: expected the last ` +
          `axis to be ${this.dim}`,
      );
    }
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** Options of `Dropout`. */
export interface DropoutOptions {
  /** Draw masks from this generator (default: the global one). */
  generator?: Generator;
}

/**
 * Inverted dropout: in training mode each entry is zeroed with probability `p` and the rest
 * are scaled by 1/(1−p); in eval mode it is the identity.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, nn, ones } from "../../mod.ts";
 * const d = new nn.Dropout(0.5, { generator: new Generator(0) });
 * const y = await d.forward(ones([8])).data(); // entries 0 or 1/(1 − p) = 2
 * assert.ok(y.every((v) => v === 0 || v === 2));
 * d.eval();
 * assert.deepEqual([...await d.forward(ones([8])).data()], new Array(8).fill(1)); // identity
 * ```
 */
export class Dropout extends Module {
  /** Drop probability. */
  readonly p: number;
  /** The mask generator (undefined = global). */
  generator: Generator | undefined;
  /** Create a Dropout; the options are described on the class and its options type. */
  constructor(p: number, opts: DropoutOptions = {}) {
    super();
    this.p = checkNumber("dropout probability", p, 0, 1);
    if (p === 1) throw new RangeError("Expected dropout probability < 1 but found 1");
    this.generator = opts.generator;
  }
  /** Apply (identity in eval mode or when p = 0). */
  forward(x: Tensor): Tensor {
    if (!this.training || this.p === 0) return x;
    const u = rand(x.shape, ro(this.generator));
    const keepMask = unary("geScalar", u, this.p);
    return x.mul(unary("affine", keepMask, 1 / (1 - this.p), 0));
  }
}

// ---------------------------------------------------------------- embeddings

/**
 * A lookup table [num, dim] initialised N(0, 1) like `torch.nn.Embedding`. Indices are
 * integer-valued f32 tensors of any shape; the output appends `dim`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const emb = new nn.Embedding(10, 4, { seed: 0 });
 * const e = await emb.forward(tensor([1, 7])).data();
 * const w = await emb.weight.data();
 * assert.deepEqual([...e], [...w.subarray(4, 8), ...w.subarray(28, 32)]); // rows 1 and 7
 * ```
 */
export class Embedding extends Module {
  /** Table size. */
  readonly num: number;
  /** Embedding width. */
  readonly dim: number;
  /** [num, dim]. */
  readonly weight: Tensor;
  /** Create a Embedding; the options are described on the class and its options type. */
  constructor(num: number, dim: number, opts: RandomOptions = {}) {
    super();
    this.num = checkInt("number of embeddings", num, 1);
    this.dim = checkInt("embedding dim", dim, 1);
    this.weight = this.param("weight", randn([num, dim], ro(generatorOf(opts))));
  }
  /** Look up rows. */
  forward(indices: Tensor): Tensor {
    const flat = indices.rank === 1 ? indices : reshape(indices, [indices.size]);
    const y = gather(this.weight, flat, 0);
    return indices.rank === 1 ? y : reshape(y, [...indices.shape, this.dim]);
  }
}

/** Options of `LabelEmbedder`. */
export interface LabelEmbedderOptions extends RandomOptions {
  /** Generator for label dropout (default: the init generator, else the global one). */
  dropGenerator?: Generator;
}

/**
 * Class labels → vectors, with per-sample label dropout for classifier-free guidance (DiT's
 * `LabelEmbedder`): when `dropProb > 0` the table has an extra row, the null class with index
 * `numClasses`, and in training mode each label is replaced by it with probability
 * `dropProb` (REPA/SV/SC drop per sample with p = 0.1). Pass label `numClasses` at sampling
 * time for the unconditional branch.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const ye = new nn.LabelEmbedder(10, 8, 0.1, { seed: 0 });
 * const e = await ye.forward(tensor([3, 10])).data(); // 10 is the null class
 * assert.deepEqual([...ye.namedParameters().keys()], ["embedding_table.weight"]);
 * const table = ye.namedParameters().get("embedding_table.weight")!;
 * assert.deepEqual([...table.shape], [11, 8]); // 10 classes + the null row
 * const w = await table.data();
 * assert.deepEqual([...e], [...w.subarray(24, 32), ...w.subarray(80, 88)]);
 * ```
 */
export class LabelEmbedder extends Module {
  /** Number of real classes. */
  readonly numClasses: number;
  /** Per-sample drop probability in training mode. */
  readonly dropProb: number;
  /** The table (`embedding_table`). */
  readonly embeddingTable: Embedding;
  /** Generator for the drop decisions (undefined = global). */
  dropGenerator: Generator | undefined;
  /** Create a LabelEmbedder; the options are described on the class and its options type. */
  constructor(numClasses: number, dim: number, dropProb = 0.1, opts: LabelEmbedderOptions = {}) {
    super();
    this.numClasses = checkInt("numClasses", numClasses, 1);
    this.dropProb = checkNumber("label drop probability", dropProb, 0, 1);
    const g = generatorOf(opts);
    this.embeddingTable = this.module(
      "embedding_table",
      new Embedding(numClasses + (dropProb > 0 ? 1 : 0), dim, ro(g)),
    );
    this.dropGenerator = opts.dropGenerator ?? g?.fork();
  }
  /**
   * Replace labels by the null class where `forceDrop` is 1, or (when `forceDrop` is not
   * given) at random with probability `dropProb`.
   */
  tokenDrop(labels: Tensor, forceDrop?: Tensor): Tensor {
    if (this.dropProb === 0 && !forceDrop) return labels;
    if (this.dropProb === 0) {
      throw new RangeError("forceDrop needs a LabelEmbedder with dropProb > 0 (a null class)");
    }
    const drop = forceDrop
      ? unary("eqScalar", forceDrop, 1)
      : less(rand([labels.size], ro(this.dropGenerator)), this.dropProb);
    const nullLabel = full([], this.numClasses, labels.backend);
    return where(reshape(drop, labels.shape), nullLabel, labels);
  }
  /**
   * Labels for the unconditional branch: `b` copies of the null class. Throws a `TypeError`
   * when there is no null class (`dropProb` = 0).
   */
  nullLabels(b: number, backend = this.embeddingTable.weight.backend): Tensor {
    if (this.dropProb === 0) {
      throw new TypeError(
        "This model is class-conditional without a null class (label drop probability 0): pass labels y",
      );
    }
    return full([b], this.numClasses, backend);
  }
  /** Embed labels [B] (dropping some in training mode). */
  forward(labels: Tensor, forceDrop?: Tensor): Tensor {
    const use = (this.training && this.dropProb > 0) || forceDrop
      ? this.tokenDrop(labels, forceDrop)
      : labels;
    return this.embeddingTable.forward(use);
  }
}

/** Options of `timestepEmbedding`. */
export interface TimestepEmbeddingOptions {
  /** Longest period (default 10000, DiT; StableVM's toy uses 1000). */
  maxPeriod?: number;
  /** Multiply t by this first (default 1; StableVM's toy uses 2π). */
  scale?: number;
  /** `"cos_sin"` (DiT, default) or `"sin_cos"` (StableVM toy). */
  order?: "cos_sin" | "sin_cos";
}

/**
 * Sinusoidal embedding of times [B] → [B, dim] (DiT's `timestep_embedding`): with
 * half = ⌊dim/2⌋ and freqsᵢ = exp(−ln(maxPeriod)·i/half), it is [cos(t·f), sin(t·f)] (a zero
 * column is appended when dim is odd).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const e = await nn.timestepEmbedding(tensor([0, 0.5]), 8).data();
 * // DiT: frequencies 10000^(−i/4), i = 0..3; [cos(t·f), sin(t·f)]
 * const f = [0, 1, 2, 3].map((i) => Math.pow(10000, -i / 4));
 * const want = [0, 0.5].flatMap((t) => [...f.map((w) => Math.cos(t * w)), ...f.map((w) => Math.sin(t * w))]);
 * want.forEach((v, i) => assert.ok(Math.abs(e[i]! - v) < 1e-6));
 * ```
 */
export function timestepEmbedding(
  t: Tensor,
  dim: number,
  opts: TimestepEmbeddingOptions = {},
): Tensor {
  checkInt("embedding dim", dim, 2);
  const maxPeriod = checkNumber("maxPeriod", opts.maxPeriod ?? 10000, 1);
  const scale = checkNumber("scale", opts.scale ?? 1);
  const order = checkChoice("order", opts.order ?? "cos_sin", ["cos_sin", "sin_cos"] as const);
  const half = Math.floor(dim / 2);
  const f = new Float32Array(half);
  for (let i = 0; i < half; i++) f[i] = scale * Math.exp(-Math.log(maxPeriod) * i / half);
  const tt = t.rank === 2 && t.shape[1] === 1 ? t : reshape(t, [t.size, 1]);
  const args = tt.mul(tensor(f, [1, half], t.backend));
  const parts = order === "cos_sin" ? [cos(args), sin(args)] : [sin(args), cos(args)];
  if (dim % 2 === 1) parts.push(zeros([t.size, 1], t.backend));
  return concat(parts, 1);
}

/** Options of `TimestepEmbedder`. */
export interface TimestepEmbedderOptions extends RandomOptions, TimestepEmbeddingOptions {
  /** Width of the sinusoidal features (default 256). */
  frequencyEmbeddingSize?: number;
}

/**
 * DiT's `TimestepEmbedder`: sinusoidal features of t, then Linear–SiLU–Linear (`mlp.0`,
 * `mlp.2`). Weights are initialised like PyTorch's Linear; DiT re-initialises them N(0, 0.02²).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, tensor } from "../../mod.ts";
 * const te = new nn.TimestepEmbedder(16, { frequencyEmbeddingSize: 8, seed: 0 });
 * assert.deepEqual([...te.forward(tensor([0.1, 0.9])).shape], [2, 16]);
 * // the MLP over 8 sinusoidal features: Linear(8, 16), SiLU, Linear(16, 16)
 * assert.equal(te.numParameters(), 8 * 16 + 16 + 16 * 16 + 16);
 * ```
 */
export class TimestepEmbedder extends Module {
  /** Linear–SiLU–Linear. */
  readonly mlp: Sequential;
  /** Sinusoidal feature width. */
  readonly frequencyEmbeddingSize: number;
  /** The sinusoid's options (period, scale, order), e.g. to rewrite weights for another time convention. */
  readonly embeddingOptions: Readonly<TimestepEmbeddingOptions>;
  /** Create a TimestepEmbedder; the options are described on the class and its options type. */
  constructor(hidden: number, opts: TimestepEmbedderOptions = {}) {
    super();
    this.frequencyEmbeddingSize = checkInt(
      "frequencyEmbeddingSize",
      opts.frequencyEmbeddingSize ?? 256,
      2,
    );
    this.embeddingOptions = { maxPeriod: opts.maxPeriod, scale: opts.scale, order: opts.order };
    const g = generatorOf(opts);
    this.mlp = this.module(
      "mlp",
      new Sequential([
        new Linear(this.frequencyEmbeddingSize, hidden, ro(g)),
        new SiLU(),
        new Linear(hidden, hidden, ro(g)),
      ]),
    );
  }
  /** Embed times [B] → [B, hidden]. */
  forward(t: Tensor): Tensor {
    return this.mlp.forward(
      timestepEmbedding(t, this.frequencyEmbeddingSize, this.embeddingOptions),
    );
  }
}

/**
 * @internal The step-size embedding of a shortcut model, or undefined for a plain one; a clear
 * error when dtBase is missing or unexpected.
 */
export function dtEmbedding(
  embedder: TimestepEmbedder | undefined,
  dtBase: Tensor | undefined,
  b: number,
): Tensor | undefined {
  if (!embedder) {
    if (dtBase !== undefined) {
      throw new TypeError(
        "This model has no step-size conditioning: build it with dtConditioning: true to pass dtBase",
      );
    }
    return undefined;
  }
  if (dtBase === undefined) {
    throw new TypeError(
      "This model is step-conditioned (a shortcut model): pass dtBase [B], log2 of the number " +
        "of steps (d = 2^−dtBase)",
    );
  }
  if (dtBase.size !== b) {
    throw new RangeError(`Expected dtBase of shape [${b}] but found ${fmtShape(dtBase.shape)}`);
  }
  return embedder.forward(dtBase.rank === 1 ? dtBase : reshape(dtBase, [b]));
}

// ---------------------------------------------------------------- convolution

/** Options of `Conv2d`. */
export interface Conv2dOptions extends RandomOptions {
  /** Step between windows (default 1). */
  stride?: number;
  /** Zero padding on each side (default 0). */
  padding?: number;
  /** Add a bias (default true). */
  bias?: boolean;
}

/**
 * 2-D convolution on NCHW inputs with weight [out, in, k, k] (PyTorch layout and default
 * init, U(±1/√(in·k²))). Computed as im2col — one gather with a cached index table — and
 * one matmul, so it costs the same few dispatches whatever the kernel size.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const conv = new nn.Conv2d(1, 4, 3, { padding: 1, seed: 0 });
 * const x = randn([2, 1, 6, 6], { seed: 1 });
 * const y = await conv.forward(x).data();
 * assert.equal(y.length, 2 * 4 * 6 * 6); // padding 1 keeps 6×6
 * // Output channel 0 at (0, 0) by hand: the 3×3 window centred there, zero-padded.
 * const [X, W, B] = [await x.data(), await conv.weight.data(), await conv.bias!.data()];
 * let s = B[0]!;
 * for (let i = 0; i < 3; i++) {
 *   for (let j = 0; j < 3; j++) {
 *     const r = i - 1, c = j - 1;
 *     if (r >= 0 && c >= 0) s += W[3 * i + j]! * X[6 * r + c]!;
 *   }
 * }
 * assert.ok(Math.abs(y[0]! - s) < 1e-5);
 * ```
 */
export class Conv2d extends Module {
  /** Input channels. */
  readonly inChannels: number;
  /** Output channels. */
  readonly outChannels: number;
  /** Kernel side. */
  readonly kernelSize: number;
  /** Stride. */
  readonly stride: number;
  /** Padding. */
  readonly padding: number;
  /** [out, in, k, k]. */
  readonly weight: Tensor;
  /** [out], or undefined. */
  readonly bias: Tensor | undefined;
  #cache = new Map<string, Tensor>();
  /** Create a Conv2d; the options are described on the class and its options type. */
  constructor(
    inChannels: number,
    outChannels: number,
    kernelSize: number,
    opts: Conv2dOptions = {},
  ) {
    super();
    this.inChannels = checkInt("inChannels", inChannels, 1);
    this.outChannels = checkInt("outChannels", outChannels, 1);
    this.kernelSize = checkInt("kernelSize", kernelSize, 1);
    this.stride = checkInt("stride", opts.stride ?? 1, 1);
    this.padding = checkInt("padding", opts.padding ?? 0, 0);
    const g = generatorOf(opts);
    const bound = 1 / Math.sqrt(inChannels * kernelSize * kernelSize);
    this.weight = this.param(
      "weight",
      initUniform(zeros([outChannels, inChannels, kernelSize, kernelSize]), bound, ro(g)),
    );
    this.bias = (opts.bias ?? true)
      ? this.param("bias", initUniform(zeros([outChannels]), bound, ro(g)))
      : undefined;
  }

  /** Output spatial size for an input of height `h` and width `w`. */
  outputSize(h: number, w: number): [number, number] {
    const k = this.kernelSize, s = this.stride, p = this.padding;
    return [Math.floor((h + 2 * p - k) / s) + 1, Math.floor((w + 2 * p - k) / s) + 1];
  }

  #indices(x: Tensor, hp: number, wp: number, ho: number, wo: number): Tensor {
    const key = `${x.backend.name}:${hp}x${wp}`;
    let idx = this.#cache.get(key);
    if (idx && !idx.isDisposed) return idx;
    const c = this.inChannels, k = this.kernelSize, s = this.stride;
    const v = new Float32Array(ho * wo * c * k * k);
    let n = 0;
    // Column order (c, ki, kj) matches weight.reshape([out, c·k·k]).
    for (let i = 0; i < ho; i++) {
      for (let j = 0; j < wo; j++) {
        for (let ch = 0; ch < c; ch++) {
          for (let ki = 0; ki < k; ki++) {
            for (let kj = 0; kj < k; kj++) {
              v[n++] = ch * hp * wp + (i * s + ki) * wp + (j * s + kj);
            }
          }
        }
      }
    }
    idx = keep(tensor(v, [v.length], x.backend));
    this.#cache.set(key, idx);
    return idx;
  }

  /** Convolve and return tokens [N, Ho·Wo, out] (what a patch embedding wants). */
  forwardTokens(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.inChannels) {
      throw new RangeError(
        `Conv2d(${this.inChannels}, ${this.outChannels}) expected an input of shape ` +
          `[N, ${this.inChannels}, H, W] but found ${fmtShape(x.shape)}`,
      );
    }
    const [n, c, h, w] = x.shape as [number, number, number, number];
    const [ho, wo] = this.outputSize(h, w);
    if (ho < 1 || wo < 1) {
      throw new RangeError(
        `Conv2d input ${fmtShape(x.shape)} is smaller than the kernel ${this.kernelSize}`,
      );
    }
    const p = this.padding;
    const xp = p > 0 ? pad(x, [[0, 0], [0, 0], [p, p], [p, p]]) : x;
    const hp = h + 2 * p, wp = w + 2 * p;
    const ck = c * this.kernelSize * this.kernelSize;
    const cols = reshape(
      gather(reshape(xp, [n, c * hp * wp]), this.#indices(x, hp, wp, ho, wo), 1),
      [n * ho * wo, ck],
    );
    let y = matmul(cols, reshape(this.weight, [this.outChannels, ck]), { transB: true });
    if (this.bias) y = y.add(this.bias);
    return reshape(y, [n, ho * wo, this.outChannels]);
  }

  /** Convolve: [N, in, H, W] → [N, out, Ho, Wo]. */
  forward(x: Tensor): Tensor {
    const [ho, wo] = this.outputSize(x.shape[2] ?? 0, x.shape[3] ?? 0);
    const tok = this.forwardTokens(x);
    return reshape(transpose(tok, [0, 2, 1]), [x.shape[0]!, this.outChannels, ho, wo]);
  }

  /** Free parameters and the cached index tables. */
  override dispose(): void {
    super.dispose();
    for (const t of this.#cache.values()) t.dispose();
    this.#cache.clear();
  }
}
