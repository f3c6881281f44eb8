/**
 * @file Velocity networks for the toy experiments: `VelocityMLP` (the bench network, [x, t]
 * → MLP → v) and `AdaLNMLP` (the StableVM toy `ScoreNet`: AdaLN-Zero MLP blocks conditioned
 * on a sinusoidal time embedding, with its parameter names).
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { concat, reshape, split } from "../ops/ops.ts";
import type { RandomOptions } from "../random.ts";
import { checkInt, checkNumber, fmtShape } from "../_util.ts";
import { Module, Sequential } from "./module.ts";
import {
  Activation,
  type ActivationName,
  Dropout,
  dtEmbedding,
  forwardFusingActivations,
  GELU,
  generatorOf,
  initConstant,
  LabelEmbedder,
  LayerNorm,
  Linear,
  TimestepEmbedder,
  timestepEmbedding,
} from "./layers.ts";

function ro(opts: RandomOptions): RandomOptions {
  const g = generatorOf(opts);
  return g ? { generator: g } : {};
}

function checkInputs(dim: number, x: Tensor, t: Tensor): number {
  if (x.rank !== 2 || x.shape[1] !== dim) {
    throw new RangeError(`Expected x of shape [B, ${dim}] but found ${fmtShape(x.shape)}`);
  }
  const b = x.shape[0]!;
  if (t.size !== b) {
    throw new RangeError(`Expected t of shape [${b}] to match x but found ${fmtShape(t.shape)}`);
  }
  return b;
}

/** Options of `VelocityMLP`. */
export interface VelocityMLPOptions extends RandomOptions {
  /** Data dimension (input and output width). */
  dim: number;
  /** Hidden width (default 256). */
  hidden?: number;
  /** Number of hidden layers (default 3: [x, t] → 256 → 256 → 256 → dim). */
  depth?: number;
  /** Activation (default "silu"). */
  activation?: ActivationName;
  /** Classes for conditioning (a label embedding is added to the first hidden layer; calls without y use the null class). */
  numClasses?: number;
  /** Per-sample label dropout for CFG (default 0.1; the null class is `numClasses`). */
  classDropoutProb?: number;
  /** Feed t through a sinusoidal embedding of this width (default: raw t, one column). */
  timeEmbedDim?: number;
  /**
   * Step-size conditioning for shortcut models (default false): a `dt_embedder`
   * (sinusoidal(dtBase) → Linear–SiLU–Linear) whose output is added to the first hidden layer,
   * as the label embedding is. `forward` then needs `dtBase` [B] (d = 2^−dtBase). Without it
   * the network, its parameters and their initial values are unchanged.
   */
  dtConditioning?: boolean;
  /** Sinusoidal width of the step-size embedding (default 32). */
  dtEmbedDim?: number;
  /**
   * A scalar-gated input skip (default false): the last layer has `dim + 1` outputs [f, c]
   * and v = f + c·x. A velocity must cancel the noise in every data direction (at t = 0,
   * v ≈ E[x1] − x), which a network narrower than `dim` cannot express through its hidden
   * layers alone; the gate c(x, t, …) supplies that identity part. Used for flat images
   * (784-D Fashion-MNIST with a 256-wide MLP). Parameter names are unchanged; the last
   * Linear is [dim + 1, hidden].
   */
  inputSkip?: boolean;
}

/**
 * The toy/bench velocity network: concat [x, t] (or [x, emb(t)]) → `depth` hidden layers
 * → velocity [B, dim]. Names: `net.0.weight`, …, `y_embedder.embedding_table.weight`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, rand, randn } from "../../mod.ts";
 * const v = new nn.VelocityMLP({ dim: 2, hidden: 32, depth: 2, seed: 0 });
 * const y = v.forward(randn([4, 2], { seed: 1 }), rand([4], { seed: 2 }));
 * assert.deepEqual([...y.shape], [4, 2]);
 * // (2 + 1 time feature) → 32 → 32 → 2
 * assert.equal(v.numParameters(), 3 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2);
 * ```
 *
 * A shortcut model (step-size conditioned) takes dtBase [B] as well:
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, rand, tensor } from "../../mod.ts";
 * const s = new nn.VelocityMLP({ dim: 2, hidden: 32, depth: 2, dtConditioning: true, seed: 0 });
 * const out = s.forward(randn([2, 2], { seed: 1 }), rand([2], { seed: 2 }), undefined, tensor([0, 7]));
 * assert.deepEqual(out.shape, [2, 2]);
 * assert.throws(() => s.forward(randn([2, 2]), rand([2])), TypeError); // dtBase is required
 * ```
 *
 * With `inputSkip`, v = f + c·x from dim + 1 outputs (for inputs wider than the MLP):
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, rand } from "../../mod.ts";
 * const w = new nn.VelocityMLP({ dim: 784, hidden: 64, inputSkip: true, seed: 0 });
 * assert.deepEqual(w.net.at(w.net.layers.length - 1).parameters()[0]!.shape, [785, 64]);
 * assert.deepEqual(w.forward(randn([2, 784], { seed: 1 }), rand([2], { seed: 2 })).shape, [2, 784]);
 * ```
 */
export class VelocityMLP extends Module {
  /** Data dimension. */
  readonly dim: number;
  /** Linear, act, …, Linear. */
  readonly net: Sequential;
  /** Label embedder (when class-conditional). */
  readonly yEmbedder: LabelEmbedder | undefined;
  /** Sinusoidal time width, or 0 for raw t. */
  readonly timeEmbedDim: number;
  /** Step-size embedder (`dt_embedder`, when `dtConditioning`). */
  readonly dtEmbedder: TimestepEmbedder | undefined;
  /** Whether the output has the scalar-gated input skip (v = f + c·x). */
  readonly inputSkip: boolean;
  /** Create a VelocityMLP; the options are described on the class and its options type. */
  constructor(opts: VelocityMLPOptions) {
    super();
    this.dim = checkInt("dim", opts.dim, 1);
    const hidden = checkInt("hidden", opts.hidden ?? 256, 1);
    const depth = checkInt("depth", opts.depth ?? 3, 1);
    this.timeEmbedDim = opts.timeEmbedDim === undefined
      ? 0
      : checkInt("timeEmbedDim", opts.timeEmbedDim, 2);
    const r = ro(opts);
    const layers = [new Linear(this.dim + (this.timeEmbedDim || 1), hidden, r)];
    const all: Module[] = [layers[0]!];
    for (let i = 1; i < depth; i++) {
      all.push(new Activation(opts.activation ?? "silu"), new Linear(hidden, hidden, r));
    }
    this.inputSkip = opts.inputSkip ?? false;
    const out = this.dim + (this.inputSkip ? 1 : 0);
    all.push(new Activation(opts.activation ?? "silu"), new Linear(hidden, out, r));
    this.net = this.module("net", new Sequential(all));
    this.yEmbedder = opts.numClasses
      ? this.module(
        "y_embedder",
        new LabelEmbedder(opts.numClasses, hidden, opts.classDropoutProb ?? 0.1, r),
      )
      : undefined;
    // Registered last, so the other parameters draw the same initial values with or without it.
    this.dtEmbedder = opts.dtConditioning
      ? this.module(
        "dt_embedder",
        new TimestepEmbedder(hidden, {
          frequencyEmbeddingSize: checkInt("dtEmbedDim", opts.dtEmbedDim ?? 32, 2),
          ...r,
        }),
      )
      : undefined;
  }
  /**
   * v(x [B, dim], t [B], y? [B], dtBase? [B]) → [B, dim]; without y a conditional net uses the
   * null class. `dtBase` (log2 of the step count, d = 2^−dtBase) is required by a
   * step-conditioned net and rejected by any other.
   */
  forward(x: Tensor, t: Tensor, y?: Tensor, dtBase?: Tensor): Tensor {
    const b = checkInputs(this.dim, x, t);
    const dte = dtEmbedding(this.dtEmbedder, dtBase, b);
    const tf = this.timeEmbedDim ? timestepEmbedding(t, this.timeEmbedDim) : reshape(t, [b, 1]);
    const layers = this.net.layers as readonly (Module & { forward(x: Tensor): Tensor })[];
    const cond = this.yEmbedder;
    // The label and step embeddings are added before the first activation, so layer 0 fuses
    // only without them.
    let out: Tensor;
    if (cond || dte) {
      let h = layers[0]!.forward(concat([x, tf], 1));
      if (cond) h = h.add(cond.forward(y ?? cond.nullLabels(b)));
      if (dte) h = h.add(dte);
      out = forwardFusingActivations(layers, h, 1);
    } else out = forwardFusingActivations(layers, concat([x, tf], 1));
    if (!this.inputSkip) return out;
    const [f, c] = split(out, [this.dim, 1], 1) as [Tensor, Tensor];
    return f.add(c.mul(x));
  }
}

/**
 * StableVM's toy `AdaLNZero`: LayerNorm(hidden) (with affine, eps 1e-5) modulated by a
 * zero-initialised Linear(cond) → (scale, shift): norm(x)·(1 + scale) + shift. Note that,
 * unlike DiT, there is no SiLU before the projection.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { layerNorm, nn, randn, tensor } from "../../mod.ts";
 * const a = new nn.AdaLNZero(8, 4, { seed: 0 });
 * const x = randn([3, 8], { seed: 1 }), c = randn([3, 4], { seed: 2 });
 * const ln = await layerNorm(x).data();
 * // Zero-initialised: the plain norm.
 * (await a.forward(x, c).data()).forEach((v, i) => assert.ok(Math.abs(v - ln[i]!) < 1e-5));
 * // fc's output is [scale, shift]: bias scale 1 and shift 0.5 give 2·norm(x) + 0.5.
 * a.loadStateDict({ "fc.bias": tensor([...new Array(8).fill(1), ...new Array(8).fill(0.5)]) }, { strict: false });
 * (await a.forward(x, c).data()).forEach((v, i) => assert.ok(Math.abs(v - (2 * ln[i]! + 0.5)) < 1e-5));
 * ```
 */
export class AdaLNZero extends Module {
  /** The norm (`norm`). */
  readonly norm: LayerNorm;
  /** cond → [scale, shift] (`fc`, zero init). */
  readonly fc: Linear;
  /** Create a AdaLNZero; the options are described on the class and its options type. */
  constructor(hidden: number, condDim: number, opts: RandomOptions = {}) {
    super();
    this.norm = this.module("norm", new LayerNorm(hidden));
    this.fc = this.module("fc", new Linear(condDim, 2 * hidden, ro(opts)));
    initConstant(this.fc.weight, 0);
    initConstant(this.fc.bias!, 0);
  }
  /** Modulated norm of x [B, hidden] by cond [B, condDim]. */
  forward(x: Tensor, cond: Tensor): Tensor {
    const h = x.shape[x.rank - 1]!;
    // The reference's chunk(2, dim=-1) order: scale first, then shift.
    const [scale, shift] = split(this.fc.forward(cond), [h, h], 1) as [Tensor, Tensor];
    return this.norm.forward(x).mul(scale.add(1)).add(shift);
  }
}

/** Options of `AdaLNMLP`. */
export interface AdaLNMLPOptions extends RandomOptions {
  /** Data dimension. */
  dim: number;
  /** Hidden width (default 32). */
  hidden?: number;
  /** Number of blocks (default 4). */
  blocks?: number;
  /** Dropout after each block (default 0.1). */
  dropout?: number;
  /** Sinusoidal time-embedding width (default 32). */
  timeEmbedDim?: number;
  /** Classes for conditioning (a label embedding is added to the conditioning; calls without y use the null class). */
  numClasses?: number;
  /** Per-sample label dropout for CFG (default 0.1; the null class is `numClasses`). */
  classDropoutProb?: number;
}

/**
 * The StableVM toy network (`ScoreNet` in SV's gmm_exp.py): e = sinusoidal(t) with base
 * 1000 and t scaled by 2π ([sin, cos]); h = input_layer([x, e]); 4 blocks of
 * AdaLNZero(h, cond) → Linear → GELU → Dropout (no residual, as the reference); then
 * output_layer. The conditioning is e, plus the label embedding when class-conditional.
 * Names follow the reference (`blocks.0.0.fc.weight`, `blocks.0.1.weight`, …).
 * Time: this network is fed our t (0 = noise, 1 = data). A network trained by SV's code
 * sees s = 1 − t and predicts ε − x = −(x1 − x0), so its weights need v(x, t) = −net(x, 1 − t).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, rand, randn } from "../../mod.ts";
 * const net = new nn.AdaLNMLP({ dim: 2, seed: 0 });
 * net.eval();
 * const x = randn([4, 2], { seed: 1 }), t = rand([4], { seed: 2 });
 * const y = await net.forward(x, t).data();
 * assert.equal(y.length, 4 * 2);
 * assert.deepEqual([...await net.forward(x, t).data()], [...y]); // eval mode: deterministic
 * ```
 */
export class AdaLNMLP extends Module {
  /** Data dimension. */
  readonly dim: number;
  /** Time-embedding width. */
  readonly timeEmbedDim: number;
  /** [x, e] → hidden. */
  readonly inputLayer: Linear;
  /** Each block: [AdaLNZero, Linear, GELU, Dropout]. */
  readonly blocks: Sequential;
  /** hidden → dim. */
  readonly outputLayer: Linear;
  /** Label embedder (when class-conditional). */
  readonly yEmbedder: LabelEmbedder | undefined;
  /** Create a AdaLNMLP; the options are described on the class and its options type. */
  constructor(opts: AdaLNMLPOptions) {
    super();
    this.dim = checkInt("dim", opts.dim, 1);
    const hidden = checkInt("hidden", opts.hidden ?? 32, 1);
    const nb = checkInt("blocks", opts.blocks ?? 4, 1);
    const p = checkNumber("dropout", opts.dropout ?? 0.1, 0, 1);
    this.timeEmbedDim = checkInt("timeEmbedDim", opts.timeEmbedDim ?? 32, 2);
    const r = ro(opts);
    const dropGen = r.generator?.fork();
    this.inputLayer = this.module(
      "input_layer",
      new Linear(this.dim + this.timeEmbedDim, hidden, r),
    );
    this.blocks = this.module(
      "blocks",
      new Sequential(
        Array.from({ length: nb }, () =>
          new Sequential([
            new AdaLNZero(hidden, this.timeEmbedDim, r),
            new Linear(hidden, hidden, r),
            new GELU(),
            new Dropout(p, { generator: dropGen }),
          ])),
      ),
    );
    this.outputLayer = this.module("output_layer", new Linear(hidden, this.dim, r));
    this.yEmbedder = opts.numClasses
      ? this.module(
        "y_embedder",
        new LabelEmbedder(opts.numClasses, this.timeEmbedDim, opts.classDropoutProb ?? 0.1, r),
      )
      : undefined;
  }
  /** v(x [B, dim], t [B], y? [B]) → [B, dim]; without y a conditional net uses the null class. */
  forward(x: Tensor, t: Tensor, y?: Tensor): Tensor {
    checkInputs(this.dim, x, t);
    const e = timestepEmbedding(t, this.timeEmbedDim, {
      maxPeriod: 1000,
      scale: 2 * Math.PI,
      order: "sin_cos",
    });
    const cond = this.yEmbedder
      ? e.add(this.yEmbedder.forward(y ?? this.yEmbedder.nullLabels(x.shape[0]!)))
      : e;
    let h = this.inputLayer.forward(concat([x, e], 1));
    for (const blk of this.blocks.layers as readonly Sequential[]) {
      h = (blk.at(0) as AdaLNZero).forward(h, cond);
      for (let i = 1; i < blk.layers.length; i++) {
        h = (blk.at(i) as unknown as { forward(x: Tensor): Tensor }).forward(h);
      }
    }
    return this.outputLayer.forward(h);
  }
}
