/**
 * @file Transformer pieces and a DiT/SiT assembly with facebookresearch/DiT's parameter
 * names (`x_embedder.proj.weight`, `t_embedder.mlp.0.weight`, `blocks.0.attn.qkv.weight`,
 * `blocks.0.adaLN_modulation.1.weight`, `final_layer.linear.weight`, …), so its
 * checkpoints load by name.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { reshape, split, tensor, transpose } from "../ops/ops.ts";
import { selfAttention } from "../ops/attention.ts";
import { layerNormModulate } from "../ops/layernorm.ts";
import { gatedResidual } from "../ops/gated.ts";
import type { RandomOptions } from "../random.ts";
import { checkInt, checkNumber, fmtShape } from "../_util.ts";
import { Module, Sequential } from "./module.ts";
import {
  Conv2d,
  dtEmbedding,
  FeedForward,
  generatorOf,
  initConstant,
  initNormal,
  initUniform,
  initXavierUniform,
  LabelEmbedder,
  LayerNorm,
  Linear,
  SiLU,
  TimestepEmbedder,
} from "./layers.ts";

function ro(opts: RandomOptions): RandomOptions {
  const g = generatorOf(opts);
  return g ? { generator: g } : {};
}

/** Options of `MultiheadSelfAttention`. */
export interface AttentionOptions extends RandomOptions {
  /** Bias on the qkv projection (default true, as DiT). */
  qkvBias?: boolean;
}

/**
 * Multi-head self-attention as timm's `Attention` (`qkv`, `proj`):
 * softmax(QKᵀ/√d_head)·V per head, heads concatenated, then projected.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { indexSelect, nn, randn, tensor } from "../../mod.ts";
 * const attn = new nn.MultiheadSelfAttention(8, 2, { seed: 0 });
 * const x = randn([2, 5, 8], { seed: 1 });
 * const y = attn.forward(x);
 * assert.deepEqual([...y.shape], [2, 5, 8]);
 * // No positions inside: reversing the tokens reverses the outputs (permutation equivariance).
 * const rev = tensor([4, 3, 2, 1, 0]);
 * const a = await indexSelect(y, rev, 1).data(), b = await attn.forward(indexSelect(x, rev, 1)).data();
 * a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) < 1e-5));
 * ```
 */
export class MultiheadSelfAttention extends Module {
  /** Model width. */
  readonly dim: number;
  /** Number of heads. */
  readonly numHeads: number;
  /** [3·dim, dim] projection to q, k, v. */
  readonly qkv: Linear;
  /** Output projection. */
  readonly proj: Linear;
  /** Create a MultiheadSelfAttention; the options are described on the class and its options type. */
  constructor(dim: number, numHeads: number, opts: AttentionOptions = {}) {
    super();
    this.dim = checkInt("dim", dim, 1);
    this.numHeads = checkInt("numHeads", numHeads, 1);
    if (dim % numHeads !== 0) {
      throw new RangeError(`Expected dim ${dim} to be divisible by numHeads ${numHeads}`);
    }
    const r = ro(opts);
    this.qkv = this.module("qkv", new Linear(dim, 3 * dim, { ...r, bias: opts.qkvBias ?? true }));
    this.proj = this.module("proj", new Linear(dim, dim, r));
  }
  /** Attend over tokens: [B, N, dim] → [B, N, dim]. */
  forward(x: Tensor): Tensor {
    if (x.rank !== 3 || x.shape[2] !== this.dim) {
      throw new RangeError(
        `Attention expected an input of shape [B, N, ${this.dim}] but found ${fmtShape(x.shape)}`,
      );
    }
    return this.proj.forward(this.core(this.qkv.forward(x)));
  }
  /**
   * The attention between the projections: the `qkv` projection's output [B, N, 3·dim] (timm's
   * layout [B, N, 3, H, d_head]) → the heads concatenated [B, N, dim], before `proj`.
   */
  core(qkv: Tensor): Tensor {
    // One fused op (no [B, H, N, N] matrix, no transposed copies of q, k, v or the output).
    return selfAttention(qkv, this.numHeads);
  }
}

/**
 * DiT's modulate: x·(1 + scale) + shift, with shift and scale [B, D] broadcast over tokens
 * when x is [B, N, D].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, ones, tensor } from "../../mod.ts";
 * // x·(1 + scale) + shift, per sample: 1·(1 + 1) + 0.5 and 1·(1 + 3) − 1
 * const y = nn.modulate(ones([2, 3, 4]), tensor([[0.5], [-1]]).mul(ones([2, 4])), tensor([[1], [3]]).mul(ones([2, 4])));
 * const d = await y.data();
 * assert.ok(d.subarray(0, 12).every((v) => v === 2.5));
 * assert.ok(d.subarray(12).every((v) => v === 3));
 * ```
 */
export function modulate(x: Tensor, shift: Tensor, scale: Tensor): Tensor {
  const s = x.rank === 3 ? reshape(scale, [scale.shape[0]!, 1, scale.shape[1]!]) : scale;
  const t = x.rank === 3 ? reshape(shift, [shift.shape[0]!, 1, shift.shape[1]!]) : shift;
  return x.mul(s.add(1)).add(t);
}

// modulate(norm(x), shift, scale): one fused op for DiT's norms (no affine), which replaces
// ~10 elementwise ops and two token-sum reductions per call, forward and backward.
function normModulate(norm: LayerNorm, x: Tensor, shift: Tensor, scale: Tensor): Tensor {
  if (norm.weight || norm.bias) return modulate(norm.forward(x), shift, scale);
  if (x.shape[x.rank - 1] !== norm.dim) return norm.forward(x); // its error names the module
  return layerNormModulate(x, shift, scale, norm.eps);
}

function chunk(x: Tensor, n: number): Tensor[] {
  const d = x.shape[x.rank - 1]! / n;
  return split(x, new Array<number>(n).fill(d), x.rank - 1);
}

/** Options of `AdaLNZeroBlock`. */
export interface AdaLNZeroBlockOptions extends RandomOptions {
  /** MLP width as a multiple of the model width (default 4). */
  mlpRatio?: number;
}

/**
 * DiT's block with adaptive layer norm, zero-initialised: from the conditioning c,
 * SiLU+Linear (`adaLN_modulation.1`, weights and bias 0 at init so the block starts as the
 * identity) give shift/scale/gate for attention and for the MLP;
 * x += gate_msa·attn(modulate(norm1(x))), x += gate_mlp·mlp(modulate(norm2(x))).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const blk = new nn.AdaLNZeroBlock(8, 2, { seed: 0 });
 * const x = randn([2, 4, 8], { seed: 1 });
 * const y = await blk.forward(x, randn([2, 8], { seed: 2 })).data();
 * // adaLN-Zero: the modulation starts at zero, so both gated residual branches vanish.
 * assert.deepEqual([...y], [...await x.data()]);
 * assert.deepEqual([...blk.namedParameters().keys()].slice(0, 2), ["attn.qkv.weight", "attn.qkv.bias"]);
 * ```
 */
export class AdaLNZeroBlock extends Module {
  /** Norm before attention (no affine, eps 1e-6). */
  readonly norm1: LayerNorm;
  /** Self-attention. */
  readonly attn: MultiheadSelfAttention;
  /** Norm before the MLP. */
  readonly norm2: LayerNorm;
  /** The MLP (tanh-GELU, as DiT). */
  readonly mlp: FeedForward;
  /** SiLU, Linear(hidden, 6·hidden). */
  readonly adaLNModulation: Sequential;
  /** Create a AdaLNZeroBlock; the options are described on the class and its options type. */
  constructor(hidden: number, numHeads: number, opts: AdaLNZeroBlockOptions = {}) {
    super();
    const r = ro(opts);
    const ratio = checkNumber("mlpRatio", opts.mlpRatio ?? 4, 0);
    this.norm1 = this.module(
      "norm1",
      new LayerNorm(hidden, { elementwiseAffine: false, eps: 1e-6 }),
    );
    this.attn = this.module("attn", new MultiheadSelfAttention(hidden, numHeads, r));
    this.norm2 = this.module(
      "norm2",
      new LayerNorm(hidden, { elementwiseAffine: false, eps: 1e-6 }),
    );
    this.mlp = this.module(
      "mlp",
      new FeedForward(hidden, Math.floor(hidden * ratio), "gelu_tanh", r),
    );
    const mod = new Linear(hidden, 6 * hidden, r);
    initConstant(mod.weight, 0);
    initConstant(mod.bias!, 0);
    this.adaLNModulation = this.module("adaLN_modulation", new Sequential([new SiLU(), mod]));
  }
  /** x [B, N, D], conditioning c [B, D] → [B, N, D]. */
  forward(x: Tensor, c: Tensor): Tensor {
    const [shMsa, scMsa, gMsa, shMlp, scMlp, gMlp] = chunk(this.adaLNModulation.forward(c), 6) as [
      Tensor,
      Tensor,
      Tensor,
      Tensor,
      Tensor,
      Tensor,
    ];
    // x + gate·branch, the gate [B, D] broadcast over the tokens: one fused op each way.
    const h = gatedResidual(x, gMsa, this.attn.forward(normModulate(this.norm1, x, shMsa, scMsa)));
    return gatedResidual(h, gMlp, this.mlp.forward(normModulate(this.norm2, h, shMlp, scMlp)));
  }
}

/**
 * DiT's final layer: modulate(norm_final(x), shift, scale) from SiLU+Linear(c) (zero init),
 * then `linear` to p·p·outChannels per token (zero init).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const fl = new nn.FinalLayer(8, 2, 3, { seed: 0 });
 * const y = fl.forward(randn([2, 4, 8], { seed: 1 }), randn([2, 8], { seed: 2 }));
 * assert.deepEqual([...y.shape], [2, 4, 2 * 2 * 3]); // p·p·channels per token
 * assert.ok((await y.data()).every((v) => v === 0)); // zero-initialised output layer
 * ```
 */
export class FinalLayer extends Module {
  /** LayerNorm without affine. */
  readonly normFinal: LayerNorm;
  /** Token → patch pixels. */
  readonly linear: Linear;
  /** SiLU, Linear(hidden, 2·hidden). */
  readonly adaLNModulation: Sequential;
  /** Create a FinalLayer; the options are described on the class and its options type. */
  constructor(hidden: number, patchSize: number, outChannels: number, opts: RandomOptions = {}) {
    super();
    const r = ro(opts);
    this.normFinal = this.module(
      "norm_final",
      new LayerNorm(hidden, { elementwiseAffine: false, eps: 1e-6 }),
    );
    this.linear = this.module("linear", new Linear(hidden, patchSize * patchSize * outChannels, r));
    const mod = new Linear(hidden, 2 * hidden, r);
    this.adaLNModulation = this.module("adaLN_modulation", new Sequential([new SiLU(), mod]));
    for (const t of [this.linear.weight, this.linear.bias!, mod.weight, mod.bias!]) {
      initConstant(t, 0);
    }
  }
  /** x [B, N, D], c [B, D] → [B, N, p·p·C]. */
  forward(x: Tensor, c: Tensor): Tensor {
    const [shift, scale] = chunk(this.adaLNModulation.forward(c), 2) as [Tensor, Tensor];
    return this.linear.forward(normModulate(this.normFinal, x, shift, scale));
  }
}

/**
 * Cut images [N, C, H, W] into non-overlapping p×p patches → [N, (H/p)·(W/p), p·p·C], each
 * patch flattened in (row, column, channel) order: the inverse of `unpatchify` (DiT's
 * layout for the final layer's output).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, arange } from "../../mod.ts";
 * const x = arange(32).reshape([2, 1, 4, 4]);
 * const p = nn.patchify(x, 2);
 * assert.deepEqual([...p.shape], [2, 4, 4]); // 2×2 patches of 2·2·1 values
 * // the first patch of image 0: pixels (0, 0), (0, 1), (1, 0), (1, 1) of the 4×4 grid
 * assert.deepEqual([...(await p.data()).subarray(0, 4)], [0, 1, 4, 5]);
 * ```
 */
export function patchify(x: Tensor, p: number): Tensor {
  checkInt("patch size", p, 1);
  if (x.rank !== 4 || x.shape[2]! % p !== 0 || x.shape[3]! % p !== 0) {
    throw new RangeError(
      `Expected images [N, C, H, W] with H and W divisible by ${p} but found ${fmtShape(x.shape)}`,
    );
  }
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const gh = h / p, gw = w / p;
  const y = transpose(reshape(x, [n, c, gh, p, gw, p]), [0, 2, 4, 3, 5, 1]);
  return reshape(y, [n, gh * gw, p * p * c]);
}

/**
 * Reassemble patches [N, T, p·p·C] into images [N, C, H, W] (DiT's `unpatchify`; the grid is
 * square unless `gridHeight` is given).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const x = randn([2, 3, 4, 4], { seed: 0 });
 * const back = nn.unpatchify(nn.patchify(x, 2), 2, 3);
 * assert.deepEqual([...await back.data()], [...await x.data()]);
 * ```
 */
export function unpatchify(x: Tensor, p: number, channels: number, gridHeight?: number): Tensor {
  checkInt("patch size", p, 1);
  checkInt("channels", channels, 1);
  if (x.rank !== 3 || x.shape[2] !== p * p * channels) {
    throw new RangeError(
      `Expected patches [N, T, ${p * p * channels}] but found ${fmtShape(x.shape)}`,
    );
  }
  const [n, t] = x.shape as [number, number, number];
  const gh = gridHeight ?? Math.round(Math.sqrt(t));
  const gw = t / gh;
  if (!Number.isInteger(gw) || gh * gw !== t) {
    throw new RangeError(`Cannot arrange ${t} patches in a grid of height ${gh}`);
  }
  const y = transpose(reshape(x, [n, gh, gw, p, p, channels]), [0, 5, 1, 3, 2, 4]);
  return reshape(y, [n, channels, gh * p, gw * p]);
}

/**
 * DiT/MAE fixed 2-D sin-cos positional table [gridSize², embedDim] (f64 math, stored f32).
 * As in the reference, the first half encodes the column index and the second the row.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * const pe = nn.get2dSinCosPosEmbed(8, 4);
 * assert.deepEqual([...pe.shape], [16, 8]);
 * // position (0, 0): sin 0 = 0 and cos 0 = 1 in each half (MAE's [sin, cos] layout)
 * assert.deepEqual([...(await pe.data()).subarray(0, 8)], [0, 0, 1, 1, 0, 0, 1, 1]);
 * ```
 */
export function get2dSinCosPosEmbed(embedDim: number, gridSize: number): Tensor {
  checkInt("gridSize", gridSize, 1);
  if (!Number.isInteger(embedDim) || embedDim < 4 || embedDim % 4 !== 0) {
    throw new RangeError(`Expected embedDim to be a multiple of 4 but found ${embedDim}`);
  }
  const quarter = embedDim / 4, half = embedDim / 2;
  const out = new Float32Array(gridSize * gridSize * embedDim);
  for (let r = 0; r < gridSize; r++) {
    for (let c = 0; c < gridSize; c++) {
      const row = (r * gridSize + c) * embedDim;
      // np.meshgrid(grid_w, grid_h): grid[0] holds the column index, grid[1] the row.
      for (const [pos, base] of [[c, 0], [r, half]] as const) {
        for (let i = 0; i < quarter; i++) {
          const a = pos / Math.pow(10000, i / quarter);
          out[row + base + i] = Math.sin(a);
          out[row + base + quarter + i] = Math.cos(a);
        }
      }
    }
  }
  return tensor(out, [gridSize * gridSize, embedDim]);
}

/**
 * timm's `PatchEmbed`: a stride-p convolution (`proj`) giving tokens [N, T, hidden].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const pe = new nn.PatchEmbed(2, 1, 8, { seed: 0 });
 * assert.deepEqual([...pe.forward(randn([2, 1, 4, 4], { seed: 1 })).shape], [2, 4, 8]);
 * assert.equal(pe.numParameters(), 8 * 1 * 2 * 2 + 8); // a 2×2 stride-2 conv, 1 → 8 channels
 * ```
 */
export class PatchEmbed extends Module {
  /** Conv2d(in, hidden, p, stride p). */
  readonly proj: Conv2d;
  /** Create a PatchEmbed; the options are described on the class and its options type. */
  constructor(patchSize: number, inChannels: number, hidden: number, opts: RandomOptions = {}) {
    super();
    this.proj = this.module(
      "proj",
      new Conv2d(inChannels, hidden, patchSize, { ...ro(opts), stride: patchSize }),
    );
  }
  /** Images → tokens. */
  forward(x: Tensor): Tensor {
    return this.proj.forwardTokens(x);
  }
}

/** Configuration of `DiT`. */
export interface DiTOptions extends RandomOptions {
  /** Image side (square images). */
  inputSize: number;
  /** Patch side (default 2). */
  patchSize?: number;
  /** Image channels (default 4, latents; 1 for Fashion-MNIST). */
  inChannels?: number;
  /** Model width (default 384, DiT-S). */
  hiddenSize?: number;
  /** Number of blocks (default 12). */
  depth?: number;
  /** Attention heads (default 6). */
  numHeads?: number;
  /** MLP ratio (default 4). */
  mlpRatio?: number;
  /** Label dropout probability for CFG (default 0.1). */
  classDropoutProb?: number;
  /** Classes (default 1000); 0 for an unconditional model (no `y_embedder`). */
  numClasses?: number;
  /**
   * Step-size conditioning for shortcut models (default false): a `dt_embedder` (a second
   * TimestepEmbedder fed dtBase, as SC's DiT) added to the conditioning, c = t + y + dt.
   * `forward` then needs `dtBase` [B]. Without it the network and its initial values are unchanged.
   */
  dtConditioning?: boolean;
}

/**
 * DiT (and SiT, which shares the network): patch embedding + fixed sin-cos positions, time
 * and label embedders summed into the conditioning, AdaLN-Zero blocks, final layer,
 * unpatchify. Output channels equal input channels (learn_sigma = false: a velocity).
 * Initialisation follows the reference `initialize_weights` (xavier-uniform Linear weights,
 * zero biases, N(0, 0.02²) label table and time MLP, zero adaLN and final layers).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, tensor } from "../../mod.ts";
 * const net = new nn.DiT({ inputSize: 4, patchSize: 2, inChannels: 1, hiddenSize: 16, depth: 1, numHeads: 2, numClasses: 3, seed: 0 });
 * const v = net.forward(randn([2, 1, 4, 4], { seed: 1 }), tensor([0.2, 0.7]), tensor([0, 2]));
 * assert.deepEqual([...v.shape], [2, 1, 4, 4]);
 * assert.ok(net.namedParameters().has("blocks.0.adaLN_modulation.1.weight"));
 * assert.ok((await v.data()).every((x) => x === 0)); // DiT's zero-initialised final layer
 * ```
 *
 * A shortcut model adds the step-size embedding (`dtConditioning`) and takes dtBase [N]:
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, tensor } from "../../mod.ts";
 * const s = new nn.DiT({ inputSize: 4, patchSize: 2, inChannels: 1, hiddenSize: 16, depth: 1, numHeads: 2, numClasses: 0, dtConditioning: true, seed: 0 });
 * const v = s.forward(randn([2, 1, 4, 4], { seed: 1 }), tensor([0.2, 0.7]), undefined, undefined, tensor([3, 7]));
 * assert.deepEqual(v.shape, [2, 1, 4, 4]);
 * assert.ok(s.namedParameters().has("dt_embedder.mlp.0.weight"));
 * ```
 */
export class DiT extends Module {
  /** Resolved configuration. */
  readonly config: Required<Omit<DiTOptions, "seed" | "generator">>;
  /** Patch embedding (`x_embedder`). */
  readonly xEmbedder: PatchEmbed;
  /** Time embedder (`t_embedder`). */
  readonly tEmbedder: TimestepEmbedder;
  /** Label embedder (`y_embedder`), absent when unconditional. */
  readonly yEmbedder: LabelEmbedder | undefined;
  /** Step-size embedder (`dt_embedder`, when `dtConditioning`). */
  readonly dtEmbedder: TimestepEmbedder | undefined;
  /** [1, T, hidden] fixed positions (a buffer, as `requires_grad=False` in DiT). */
  readonly posEmbed: Tensor;
  /** The blocks. */
  readonly blocks: Sequential;
  /** Final layer. */
  readonly finalLayer: FinalLayer;
  /** Create a DiT; the options are described on the class and its options type. */
  constructor(opts: DiTOptions) {
    super();
    const c = {
      inputSize: checkInt("inputSize", opts.inputSize, 1),
      patchSize: checkInt("patchSize", opts.patchSize ?? 2, 1),
      inChannels: checkInt("inChannels", opts.inChannels ?? 4, 1),
      hiddenSize: checkInt("hiddenSize", opts.hiddenSize ?? 384, 4),
      depth: checkInt("depth", opts.depth ?? 12, 1),
      numHeads: checkInt("numHeads", opts.numHeads ?? 6, 1),
      mlpRatio: checkNumber("mlpRatio", opts.mlpRatio ?? 4, 0),
      classDropoutProb: checkNumber("classDropoutProb", opts.classDropoutProb ?? 0.1, 0, 1),
      numClasses: checkInt("numClasses", opts.numClasses ?? 1000, 0),
      dtConditioning: opts.dtConditioning === true,
    };
    if (c.inputSize % c.patchSize !== 0) {
      throw new RangeError(
        `Expected inputSize ${c.inputSize} to be divisible by patchSize ${c.patchSize}`,
      );
    }
    this.config = c;
    const r = ro(opts);
    const hs = c.hiddenSize;
    this.xEmbedder = this.module("x_embedder", new PatchEmbed(c.patchSize, c.inChannels, hs, r));
    this.tEmbedder = this.module("t_embedder", new TimestepEmbedder(hs, r));
    this.yEmbedder = c.numClasses > 0
      ? this.module("y_embedder", new LabelEmbedder(c.numClasses, hs, c.classDropoutProb, r))
      : undefined;
    const grid = c.inputSize / c.patchSize;
    const pe = get2dSinCosPosEmbed(hs, grid);
    this.posEmbed = this.buffer("pos_embed", reshape(pe, [1, grid * grid, hs]));
    pe.dispose(); // the buffer is a view sharing its storage
    this.blocks = this.module(
      "blocks",
      new Sequential(
        Array.from(
          { length: c.depth },
          () => new AdaLNZeroBlock(hs, c.numHeads, { ...r, mlpRatio: c.mlpRatio }),
        ),
      ),
    );
    this.finalLayer = this.module("final_layer", new FinalLayer(hs, c.patchSize, c.inChannels, r));
    this.#initializeWeights(r);
    // Created and initialised last (like t_embedder: N(0, 0.02²) weights, zero biases), so the
    // other parameters draw the same initial values with or without it.
    this.dtEmbedder = c.dtConditioning
      ? this.module("dt_embedder", new TimestepEmbedder(hs, r))
      : undefined;
    for (const m of this.dtEmbedder?.mlp.layers ?? []) {
      if (!(m instanceof Linear)) continue;
      initNormal(m.weight, 0.02, r);
      if (m.bias) initConstant(m.bias, 0);
    }
  }

  #initializeWeights(r: RandomOptions): void {
    for (const [name, m] of this.namedModules()) {
      if (!(m instanceof Linear)) continue;
      if (name.includes("adaLN_modulation") || name.startsWith("final_layer.linear")) continue;
      if (name.startsWith("t_embedder.")) initNormal(m.weight, 0.02, r);
      else initXavierUniform(m.weight, r);
      if (m.bias) initConstant(m.bias, 0);
    }
    const w = this.xEmbedder.proj.weight;
    // DiT: xavier_uniform_(w.view(w.shape[0], -1)): fans of the flattened kernel, not of 4-D w.
    initUniform(w, Math.sqrt(6 / (w.size / w.shape[0]! + w.shape[0]!)), r);
    if (this.xEmbedder.proj.bias) initConstant(this.xEmbedder.proj.bias, 0);
    if (this.yEmbedder) initNormal(this.yEmbedder.embeddingTable.weight, 0.02, r);
  }

  /**
   * Velocity for images x [N, C, H, W] at times t [N] (t = 0 noise, t = 1 data, fed to the
   * embedder unscaled as SiT does) and labels y [N] (the null class `numClasses` for the
   * unconditional branch, also used when y is omitted). `forceDrop` [N] (1 = drop) overrides
   * random label dropout. `dtBase` [N] (log2 of the step count, d = 2^−dtBase) is required by
   * a step-conditioned (shortcut) model and rejected by any other.
   */
  forward(x: Tensor, t: Tensor, y?: Tensor, forceDrop?: Tensor, dtBase?: Tensor): Tensor {
    const c0 = this.config;
    const dte = dtEmbedding(this.dtEmbedder, dtBase, x.shape[0]!);
    let h = this.xEmbedder.forward(x).add(this.posEmbed);
    let cond = this.tEmbedder.forward(t);
    if (dte) cond = cond.add(dte);
    if (this.yEmbedder) {
      const labels = y ?? this.yEmbedder.nullLabels(x.shape[0]!);
      cond = cond.add(this.yEmbedder.forward(labels, forceDrop));
    }
    let depth = 0;
    for (const blk of this.blocks.layers) {
      h = (blk as AdaLNZeroBlock).forward(h, cond);
      if (++depth === this.#tap?.depth) this.#tap.hidden = h;
    }
    h = this.finalLayer.forward(h, cond);
    return unpatchify(h, c0.patchSize, c0.inChannels);
  }

  #tap: { depth: number; hidden?: Tensor } | undefined;

  /**
   * `forward`, also returning the tokens [N, T, hidden] after the first `depth` blocks (REPA's
   * `--encoder-depth`: the hidden state a projector aligns to encoder features). The tokens
   * are part of the same graph, so a loss on them trains the first `depth` blocks.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { nn, randn, tensor } from "../../mod.ts";
   * const net = new nn.DiT({ inputSize: 4, patchSize: 2, inChannels: 1, hiddenSize: 8, depth: 2, numHeads: 2, numClasses: 0, seed: 0 });
   * const x = randn([3, 1, 4, 4], { seed: 1 }), t = tensor([0.1, 0.5, 0.9]);
   * const { out, hidden } = net.forwardWithHidden(1, x, t);
   * assert.deepEqual(hidden.shape, [3, 4, 8]); // 4 patches of width 8
   * assert.deepEqual([...await out.data()], [...await net.forward(x, t).data()]);
   * assert.throws(() => net.forwardWithHidden(3, x, t), /encoder depth/);
   * ```
   */
  forwardWithHidden(
    depth: number,
    x: Tensor,
    t: Tensor,
    y?: Tensor,
    forceDrop?: Tensor,
  ): { out: Tensor; hidden: Tensor } {
    checkInt("encoder depth (blocks before the projector)", depth, 1, this.config.depth);
    const tap: { depth: number; hidden?: Tensor } = { depth };
    this.#tap = tap;
    try {
      const out = this.forward(x, t, y, forceDrop);
      return { out, hidden: tap.hidden! };
    } finally {
      this.#tap = undefined;
    }
  }
}

/**
 * SiT is DiT's network trained as a velocity model (same names, same forward).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn } from "../../mod.ts";
 * const net = new nn.SiT({ inputSize: 4, inChannels: 1, hiddenSize: 8, depth: 1, numHeads: 2, numClasses: 2, seed: 0 });
 * assert.equal(nn.SiT, nn.DiT); // the same network; SiT differs in its objective only
 * assert.ok(net instanceof nn.DiT);
 * ```
 */
export const SiT: typeof DiT = DiT;
/** SiT is DiT's network trained as a velocity model. */
export type SiT = DiT;
