/**
 * @file The interface both backends implement, every method on both: the CPU backend
 * (cpu.ts, plain loops) is the living specification and webgpu.ts the fast path. There are
 * no optional methods and no composed fallbacks: a fused or grouped operation is part of the
 * interface, so the layers above call one method and get one meaning on either backend.
 * The op vocabulary (elementwise op table, expression IR, reductions, matmul geometry) lives
 * in lib/ir.ts and the random streams in lib/philox.ts.
 * @module
 */
import type { Expr, MatmulGeom, ReduceOp } from "../ir.ts";
import type { RandomKind, RandomState } from "../philox.ts";

/** Backend-owned memory for `size` f32 elements. */
export interface Storage {
  /** Number of f32 elements. */
  readonly size: number;
}

/** A strided view: element `i` (row-major over `shape`) lives at `offset + Σ idx_d·strides_d`. */
export interface View {
  /** The view's shape. */
  shape: readonly number[];
  /** Element stride of each axis (0 on a broadcast axis). */
  strides: readonly number[];
  /** Element offset of index 0. */
  offset: number;
}

/** One group of `elementwiseGroups`: same-sized contiguous inputs (e.g. p, g, m, v). */
export interface ElementwiseGroup {
  /** The group's inputs, all of `size` elements. */
  readonly inputs: readonly Storage[];
  /** Elements per input (and per output). */
  readonly size: number;
}

/**
 * A matmul epilogue applied as each output element is stored: `expr` over input 0, the
 * accumulated product, and inputs `1..`, the row vectors `rows[i − 1]` (each of `n`
 * elements, broadcast along the output's last axis like a bias). `act(acc + bias)` makes a
 * linear layer one dispatch.
 */
export interface MatmulEpilogue {
  /** The expression over the accumulator (input 0) and the rows (inputs 1…). */
  readonly expr: Expr;
  /** Row vectors of `n` elements broadcast along the output's last axis (e.g. a bias). */
  readonly rows: readonly Storage[];
}

/**
 * The elementwise results of one matrix product (`Backend.matmulOutputs`): output `i` is
 * `exprs[i]` over input 0, the accumulated product, inputs `1 … r`, the row vectors `rows`
 * (each of `n` elements, broadcast along the output's last axis like a bias), and inputs
 * `r + 1 …`, the `dense` arrays (each of `batch·m·n` elements laid out like the product).
 * A linear layer and its activation under a tape store the activation and its derivative
 * (two outputs), and the layer's backward pass the derivative times dy·W (a dense input)
 * with no separate pass over either.
 */
export interface MatmulOutputs {
  /** One expression per output, over the accumulator, the rows and the dense arrays. */
  readonly exprs: readonly Expr[];
  /** Row vectors of `n` elements broadcast along the output's last axis (e.g. a bias). */
  readonly rows: readonly Storage[];
  /** Arrays of the product's size and layout, read element by element. */
  readonly dense: readonly Storage[];
}

/**
 * The interface both backends implement. Every method that returns a `Storage` allocates it;
 * inputs are never modified except `dst` in `copyInto` and the `inPlace` inputs of
 * `elementwiseGroups`.
 */
export interface Backend {
  /** "cpu", "wasm" (the CPU backend with WebAssembly SIMD kernels) or "webgpu". */
  readonly name: "cpu" | "wasm" | "webgpu";
  /** Human-readable description of the device in use. */
  readonly description: string;
  /** A new storage holding a copy of `data`. */
  upload(data: Float32Array): Storage;
  /** The elements of `s`, after all recorded work that writes it has run. */
  read(s: Storage): Promise<Float32Array>;
  /** Synchronous read: the CPU backend's elements; WebGPU throws (a GPU read is async). */
  readSync(s: Storage): Float32Array;
  /** A new storage of `size` elements (contents unspecified). */
  alloc(size: number): Storage;
  /** Release `s` (its buffer returns to the pool on WebGPU). */
  free(s: Storage): void;
  /** Bytes of storages allocated and not yet freed (garbage-collected leaks still count). */
  liveBytes(): number;
  /** Submit recorded work (no-op on CPU). */
  flush(): void;
  /** Wait until all submitted work has finished. */
  sync(): Promise<void>;
  /** `size` copies of `value`, bit for bit (NaN payloads and −0 survive). */
  fill(size: number, value: number): Storage;
  /** `start + i·step` for i < size. */
  iota(size: number, start: number, step: number): Storage;
  /**
   * Evaluate elementwise expressions (DAGs over the inputs, see lib/ir.ts) over `outShape`
   * in one pass: one kernel on WebGPU, node by node over whole arrays on the CPU. Input `j` is
   * read through `inputStrides[j]`, aligned to `outShape` (0 on broadcast axes). Returns one
   * fresh contiguous storage per output. Every elementwise op, `where`, and every fused
   * expression (an activation's backward, an optimizer update) goes through here.
   */
  elementwise(
    outputs: readonly Expr[],
    inputs: readonly Storage[],
    inputStrides: readonly (readonly number[])[],
    outShape: readonly number[],
  ): Storage[];
  /**
   * The same expression DAG over several groups of same-sized contiguous inputs (an
   * optimizer's p, g, m, v for every parameter) plus shared scalar storages (size ≥ 1, read at
   * element 0): input index `i < k` of the DAG is the group's input `i`, index `k + t` is
   * `scalars[t]`. Returns one array of fresh output storages (of the group's size) per group,
   * computed in as few dispatches as the binding limits allow (one on WebGPU when they fit).
   * `inPlace[t] ≥ 0` writes output t into the group's input `inPlace[t]` instead (returned as
   * that same storage; each element is read before it is written); the caller guarantees
   * such inputs are distinct from every other storage passed.
   */
  elementwiseGroups(
    outputs: readonly Expr[],
    groups: readonly ElementwiseGroup[],
    scalars: readonly Storage[],
    inPlace?: readonly number[],
  ): Storage[][];
  /** Reduce `x` of `shape` over sorted `axes`; the result is contiguous over the kept axes. */
  reduce(op: ReduceOp, x: Storage, shape: readonly number[], axes: readonly number[]): Storage;
  /**
   * Batched matrix product (see `MatmulGeom`), with an optional epilogue applied as the output
   * is stored (one pass: a linear layer's bias add and activation cost no dispatch of their
   * own). The epilogue is applied even when `k = 0` (to an accumulator of 0).
   */
  matmul(a: Storage, b: Storage, g: MatmulGeom, epilogue?: MatmulEpilogue): Storage;
  /**
   * A batched matrix product (see `MatmulGeom`) and several elementwise results of it (see
   * `MatmulOutputs`), one fresh storage per expression, with the same values as `matmul`
   * followed by `elementwise` over the product: the product itself is not kept. The `wasm`
   * backend computes GELU-tanh with its derivative, and a product times a dense array, as the
   * product is stored; the others (and other expressions) run the product, then one
   * elementwise pass.
   */
  matmulOutputs(a: Storage, b: Storage, g: MatmulGeom, outputs: MatmulOutputs): Storage[];
  /**
   * A linear layer's weight and bias gradients in one call: `aᵀ·b` ([m, n], for row-major
   * `a [k, m]`, the layer's output cotangent, and `b [k, n]`, its input) and the column sums
   * of `a` ([m], Σ over its k rows) — the values of `matmul` with `transA` and of
   * `reduce("sum", a, [k, m], [0])`, bit for bit. The `wasm` backend sums `a` as the product
   * reads it (cuBLASLt's BGRADA epilogue), where the separate sum read all of `a` once more;
   * the others run the two calls.
   */
  matmulBiasGrad(a: Storage, b: Storage, m: number, n: number, k: number): [Storage, Storage];
  /**
   * log Σ exp(x + v) along one axis of a contiguous `x [rows, cols]` in one pass (online
   * max and sum; one kernel on WebGPU): axis 1 gives `out[i] = log Σ_j exp(x[i, j] + v[j])`
   * (v has `cols` elements, out `rows`), axis 0 gives `out[j] = log Σ_i exp(x[i, j] + v[i])`
   * (v has `rows`, out `cols`). x + v is rounded to f32 first, as an elementwise add would
   * be. Any NaN term gives NaN; an all −∞ (or empty) line gives −∞. The result is written as
   * `scale · lse + shift` (default 1, 0). Log-domain Sinkhorn reads its matrix once per
   * half-iteration through this.
   */
  logSumExpAdd(
    x: Storage,
    v: Storage,
    rows: number,
    cols: number,
    axis: 0 | 1,
    scale?: number,
    shift?: number,
  ): Storage;
  /**
   * Scaled-dot-product self-attention over timm's packed projection, batched over batch ×
   * heads: `qkv` is `[b, n, 3, heads, d]` (q, k, v of each token and head), and for each batch
   * and head `O = softmax(scale · Q·Kᵀ)·V` (rows over keys). Returns `[o, lse]`: `o` is
   * `[b, n, heads, d]` (the heads concatenated per token) and `lse [b, heads, n]` each query
   * row's log Σ_j exp(scale · q·k_j), which `attentionBackward` reuses instead of a stored
   * probability matrix. A NaN score makes its row's outputs NaN. One kernel on WebGPU.
   */
  attention(
    qkv: Storage,
    b: number,
    n: number,
    heads: number,
    d: number,
    scale: number,
  ): [Storage, Storage];
  /**
   * The gradient of `attention`'s `o` with respect to `qkv`, given the cotangent `dO`
   * (`[b, n, heads, d]`) and the forward's `o` and `lse`: with P = exp(scale · Q·Kᵀ − lse),
   * D = rowsum(dO ⊙ O) and dS = P ⊙ (dO·Vᵀ − D), it returns `dqkv [b, n, 3, heads, d]` holding
   * dQ = scale · dS·K, dK = scale · dSᵀ·Q, dV = Pᵀ·dO in the q, k, v slots.
   */
  attentionBackward(
    qkv: Storage,
    o: Storage,
    lse: Storage,
    dO: Storage,
    b: number,
    n: number,
    heads: number,
    d: number,
    scale: number,
  ): Storage;
  /**
   * LayerNorm over the last axis without affine (biased variance) followed by DiT's AdaLN
   * modulation, for `x [b, t, d]` and per-sample `shift`, `scale [b, d]` broadcast over the t
   * tokens: with μ and σ² the mean and biased variance of row (i, j) and r = 1/√(σ² + eps),
   * `y[i, j, :] = (x[i, j, :] − μ)·r · (1 + scale[i, :]) + shift[i, :]`. Returns `[y, stats]`:
   * `stats [b·t, 2]` holds (μ, r) per row, which `layerNormModulateBackward` reuses. One kernel
   * on WebGPU.
   */
  layerNormModulate(
    x: Storage,
    shift: Storage,
    scale: Storage,
    b: number,
    t: number,
    d: number,
    eps: number,
  ): [Storage, Storage];
  /**
   * The gradients of `layerNormModulate`'s `y` given the cotangent `dy [b, t, d]`, the forward's
   * `stats` and `x`, `scale`: with x̂ = (x − μ)·r and g = dy·(1 + scale) per row,
   * `dx = r·(g − mean(g) − x̂·mean(g·x̂))` (means over d), `dshift[i, :] = Σ_j dy[i, j, :]` and
   * `dscale[i, :] = Σ_j dy[i, j, :]·x̂[i, j, :]`. Returns `[dx, dshift, dscale]`. With `acc`
   * ([b, t, d]: the cotangent x has gathered elsewhere, e.g. a residual connection's), the first
   * result is dx + acc instead (dx rounded to f32, then the f32 add: an elementwise add's bits),
   * added as dx is stored where the backend can.
   */
  layerNormModulateBackward(
    x: Storage,
    scale: Storage,
    stats: Storage,
    dy: Storage,
    b: number,
    t: number,
    d: number,
    acc?: Storage,
  ): [Storage, Storage, Storage];
  /**
   * The gradients of a gated residual `out = x + g·a` (per-sample gate `g [b, d]` broadcast over
   * the t tokens of `a [b, t, d]`, DiT's AdaLN-Zero branches) given the cotangent `dy [b, t, d]`:
   * `da[i, j, :] = g[i, :]·dy[i, j, :]` and the token sums `dg[i, :] = Σ_j a[i, j, :]·dy[i, j, :]`
   * (each product rounded to f32, as an elementwise multiply would). Returns `[da, dg]` (dx is dy
   * itself). One pass over a and dy on `wasm`.
   */
  gatedResidualBackward(
    g: Storage,
    a: Storage,
    dy: Storage,
    b: number,
    t: number,
    d: number,
  ): [Storage, Storage];
  /** dst[view dstView] = src[view srcView]; both views have the same shape. */
  copyInto(dst: Storage, dstView: View, src: Storage, srcView: View): void;
  /** out = x indexed along `axis` by `idx` (f32 integer values). */
  gather(x: Storage, shape: readonly number[], axis: number, idx: Storage): Storage;
  /** out has `shape` with `shape[axis] = dimSize`; out[.., idx[i], ..] += src[.., i, ..]. */
  scatterAdd(
    src: Storage,
    srcShape: readonly number[],
    axis: number,
    idx: Storage,
    dimSize: number,
  ): Storage;
  /** A Philox stream (see lib/philox.ts): the same bits on both backends. */
  random(kind: RandomKind, size: number, state: RandomState): Storage;
}

/**
 * The geometry of a weight gradient aᵀ·b: one 2-D product of `a [k, m]` read transposed and a
 * row-major `b [k, n]` (what `Backend.matmulBiasGrad` computes).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { weightGradGeom } from "./backend.ts";
 * const g = weightGradGeom(4, 3, 10);
 * assert.ok(g.transA && !g.transB && g.batch === 1 && g.k === 10);
 * ```
 */
export function weightGradGeom(m: number, n: number, k: number): MatmulGeom {
  return { batch: 1, m, n, k, transA: true, transB: false, aBatchStride: 0, bBatchStride: 0 };
}

/**
 * `Backend.matmulBiasGrad` as its two calls, the product and the column sums (the CPU and
 * WebGPU backends' way).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CpuBackend } from "./cpu.ts";
 * import { matmulBiasGradByParts } from "./backend.ts";
 * const be = new CpuBackend();
 * // a [2, 1] = [[1], [2]], b [2, 2] = [[3, 4], [5, 6]]: aᵀ·b = [[13, 16]], Σ rows of a = [3]
 * const [w, s] = matmulBiasGradByParts(be, be.upload(Float32Array.of(1, 2)), be.upload(Float32Array.of(3, 4, 5, 6)), 1, 2, 2);
 * assert.deepEqual([...be.readSync(w)], [13, 16]);
 * assert.deepEqual([...be.readSync(s)], [3]);
 * ```
 */
export function matmulBiasGradByParts(
  be: Backend,
  a: Storage,
  b: Storage,
  m: number,
  n: number,
  k: number,
): [Storage, Storage] {
  return [be.matmul(a, b, weightGradGeom(m, n, k)), be.reduce("sum", a, [k, m], [0])];
}

/**
 * `Backend.matmulOutputs` as the product, then one elementwise call writing every output (the
 * same f32 steps as a matmul epilogue); the product is freed.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CpuBackend } from "./cpu.ts";
 * import { matmulOutputsByParts, weightGradGeom } from "./backend.ts";
 * const be = new CpuBackend();
 * const x = { kind: "input", index: 0 } as const;
 * // [[1], [2]]ᵀ·[[3], [4]] = [[11]]; outputs 11 and 11·11
 * const [p, q] = matmulOutputsByParts(be, be.upload(Float32Array.of(1, 2)), be.upload(Float32Array.of(3, 4)), weightGradGeom(1, 1, 2), {
 *   exprs: [x, { kind: "binary", op: "mul", a: x, b: x }],
 *   rows: [],
 *   dense: [],
 * });
 * assert.deepEqual([be.readSync(p!)[0], be.readSync(q!)[0]], [11, 121]);
 * ```
 */
export function matmulOutputsByParts(
  be: Backend,
  a: Storage,
  b: Storage,
  g: MatmulGeom,
  outputs: MatmulOutputs,
): Storage[] {
  const acc = be.matmul(a, b, g);
  try {
    return be.elementwise(
      outputs.exprs,
      [acc, ...outputs.rows, ...outputs.dense],
      [[g.n, 1], ...outputs.rows.map(() => [0, 1]), ...outputs.dense.map(() => [g.n, 1])],
      [g.batch * g.m, g.n],
    );
  } finally {
    be.free(acc);
  }
}
