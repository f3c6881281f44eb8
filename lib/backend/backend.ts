/**
 * @file The backend interface and the op tables both backends share. Each elementwise op
 * is defined once here as a CPU function and a WGSL expression, so the CPU backend (the
 * living spec) and the WebGPU kernels cannot drift apart in meaning.
 * @module
 */

/** Elementwise unary ops. `p0`, `p1` are per-call scalar parameters. */
export type UnaryOp =
  | "neg"
  | "exp"
  | "log"
  | "sqrt"
  | "rsqrt"
  | "sin"
  | "cos"
  | "tanh"
  | "sigmoid"
  | "silu"
  | "gelu"
  | "relu"
  | "abs"
  | "sign"
  | "square"
  | "reciprocal"
  | "floor"
  | "erf"
  | "affine"
  | "powScalar"
  | "clamp"
  | "gtScalar"
  | "geScalar"
  | "ltScalar"
  | "leScalar"
  | "eqScalar"
  | "isNan"
  | "copy";

/** Elementwise binary ops with NumPy broadcasting. Comparisons return 1 or 0. */
export type BinaryOp =
  | "add"
  | "sub"
  | "mul"
  | "div"
  | "pow"
  | "maximum"
  | "minimum"
  | "eq"
  | "ne"
  | "lt"
  | "le"
  | "gt"
  | "ge";

/** Reductions over a set of axes. Arg-reductions return f32 indices into the flattened axes. */
export type ReduceOp = "sum" | "max" | "min" | "argmax" | "argmin";

/** Kinds of random stream. `bits` returns raw 32-bit words reinterpreted as float bits. */
export type RandomKind = "uniform" | "normal" | "bits";

// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): WGSL has no erf, and both backends must use
// the same formula so that gelu agrees across them.
const ERF_A = [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429];
const ERF_P = 0.3275911;

/** The erf approximation both backends use (A&S 7.1.26). */
export function erfApprox(x: number): number {
  const s = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  const t = 1 / (1 + ERF_P * a);
  const y = 1 -
    ((((ERF_A[4]! * t + ERF_A[3]!) * t + ERF_A[2]!) * t + ERF_A[1]!) * t + ERF_A[0]!) * t *
      Math.exp(-a * a);
  return s * y;
}

/** WGSL helper functions that unary/binary expressions may call. */
export const WGSL_HELPERS = `
fn erf_(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0 / (1.0 + ${ERF_P} * a);
  let y = 1.0 - (((((${ERF_A[4]} * t + ${ERF_A[3]}) * t + ${ERF_A[2]}) * t + ${ERF_A[1]}) * t + ${
  ERF_A[0]
}) * t) * exp(-a * a);
  return select(y, -y, x < 0.0);
}
fn tanh_(x: f32) -> f32 {
  // tanh via exp(-2|x|) never overflows, unlike (e^2x - 1) / (e^2x + 1) on some drivers.
  let e = exp(-2.0 * abs(x));
  let y = (1.0 - e) / (1.0 + e);
  return select(y, -y, x < 0.0);
}
fn sigmoid_(x: f32) -> f32 {
  let e = exp(-abs(x));
  return select(1.0 / (1.0 + e), e / (1.0 + e), x < 0.0);
}
fn pow_(x: f32, y: f32) -> f32 {
  // WGSL pow is undefined for x < 0; follow IEEE pow for integer exponents.
  if (y == 0.0) { return 1.0; }
  // pow(0, y) is undefined in WGSL (lavapipe returns 0 for y < 0); the CPU gives +inf or 0.
  if (x == 0.0) { return select(0.0, bitcast<f32>(0x7f800000u), y < 0.0); }
  let r = pow(abs(x), y);
  if (x >= 0.0) { return r; }
  if (floor(y) != y) { return bitcast<f32>(0x7fc00000u); }
  let odd = (abs(y) % 2.0) == 1.0;
  return select(r, -r, odd);
}
`;

function sigmoidCpu(x: number): number {
  const e = Math.exp(-Math.abs(x));
  return x < 0 ? e / (1 + e) : 1 / (1 + e);
}
function tanhCpu(x: number): number {
  const e = Math.exp(-2 * Math.abs(x));
  const y = (1 - e) / (1 + e);
  return x < 0 ? -y : y;
}
function powCpu(x: number, y: number): number {
  if (y === 0) return 1;
  const r = Math.pow(Math.abs(x), y);
  if (x >= 0) return r;
  if (Math.floor(y) !== y) return NaN;
  return Math.abs(y) % 2 === 1 ? -r : r;
}

/** One elementwise unary op: CPU function and WGSL expression over `x`, `p0`, `p1`. */
export interface UnarySpec {
  cpu: (x: number, p0: number, p1: number) => number;
  wgsl: string;
}

/** The unary op table. */
export const UNARY: Record<UnaryOp, UnarySpec> = {
  neg: { cpu: (x) => -x, wgsl: "-x" },
  exp: { cpu: Math.exp, wgsl: "exp(x)" },
  log: { cpu: Math.log, wgsl: "log(x)" },
  sqrt: { cpu: Math.sqrt, wgsl: "sqrt(x)" },
  rsqrt: { cpu: (x) => 1 / Math.sqrt(x), wgsl: "inverseSqrt(x)" },
  sin: { cpu: Math.sin, wgsl: "sin(x)" },
  cos: { cpu: Math.cos, wgsl: "cos(x)" },
  tanh: { cpu: tanhCpu, wgsl: "tanh_(x)" },
  sigmoid: { cpu: sigmoidCpu, wgsl: "sigmoid_(x)" },
  silu: { cpu: (x) => x * sigmoidCpu(x), wgsl: "x * sigmoid_(x)" },
  gelu: {
    cpu: (x) => 0.5 * x * (1 + erfApprox(x * Math.SQRT1_2)),
    wgsl: "0.5 * x * (1.0 + erf_(x * 0.7071067811865476))",
  },
  relu: { cpu: (x) => (x > 0 ? x : 0), wgsl: "max(x, 0.0)" },
  abs: { cpu: Math.abs, wgsl: "abs(x)" },
  sign: { cpu: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0), wgsl: "sign(x)" },
  square: { cpu: (x) => x * x, wgsl: "x * x" },
  reciprocal: { cpu: (x) => 1 / x, wgsl: "1.0 / x" },
  floor: { cpu: Math.floor, wgsl: "floor(x)" },
  erf: { cpu: erfApprox, wgsl: "erf_(x)" },
  affine: { cpu: (x, a, b) => x * a + b, wgsl: "x * p0 + p1" },
  powScalar: { cpu: (x, p) => powCpu(x, p), wgsl: "pow_(x, p0)" },
  clamp: { cpu: (x, lo, hi) => Math.min(Math.max(x, lo), hi), wgsl: "min(max(x, p0), p1)" },
  gtScalar: { cpu: (x, p) => (x > p ? 1 : 0), wgsl: "select(0.0, 1.0, x > p0)" },
  geScalar: { cpu: (x, p) => (x >= p ? 1 : 0), wgsl: "select(0.0, 1.0, x >= p0)" },
  ltScalar: { cpu: (x, p) => (x < p ? 1 : 0), wgsl: "select(0.0, 1.0, x < p0)" },
  leScalar: { cpu: (x, p) => (x <= p ? 1 : 0), wgsl: "select(0.0, 1.0, x <= p0)" },
  eqScalar: { cpu: (x, p) => (x === p ? 1 : 0), wgsl: "select(0.0, 1.0, x == p0)" },
  // NaN is tested on the bits: WGSL lets compilers fold `x != x` to false (lavapipe does).
  isNan: {
    cpu: (x) => (Number.isNaN(x) ? 1 : 0),
    wgsl: "select(0.0, 1.0, (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u)",
  },
  copy: { cpu: (x) => x, wgsl: "x" },
};

/** One elementwise binary op: CPU function and WGSL expression over `a`, `b`. */
export interface BinarySpec {
  cpu: (a: number, b: number) => number;
  wgsl: string;
}

/** The binary op table. */
export const BINARY: Record<BinaryOp, BinarySpec> = {
  add: { cpu: (a, b) => a + b, wgsl: "a + b" },
  sub: { cpu: (a, b) => a - b, wgsl: "a - b" },
  mul: { cpu: (a, b) => a * b, wgsl: "a * b" },
  div: { cpu: (a, b) => a / b, wgsl: "a / b" },
  pow: { cpu: powCpu, wgsl: "pow_(a, b)" },
  // select() with the CPU's comparison, not WGSL max/min (undefined for NaN; lavapipe drops it).
  maximum: { cpu: (a, b) => (a >= b ? a : b), wgsl: "select(b, a, a >= b)" },
  minimum: { cpu: (a, b) => (a <= b ? a : b), wgsl: "select(b, a, a <= b)" },
  eq: { cpu: (a, b) => (a === b ? 1 : 0), wgsl: "select(0.0, 1.0, a == b)" },
  // Negated ==: lavapipe compiles != as an ordered comparison, false for NaN.
  ne: { cpu: (a, b) => (a !== b ? 1 : 0), wgsl: "select(1.0, 0.0, a == b)" },
  lt: { cpu: (a, b) => (a < b ? 1 : 0), wgsl: "select(0.0, 1.0, a < b)" },
  le: { cpu: (a, b) => (a <= b ? 1 : 0), wgsl: "select(0.0, 1.0, a <= b)" },
  gt: { cpu: (a, b) => (a > b ? 1 : 0), wgsl: "select(0.0, 1.0, a > b)" },
  ge: { cpu: (a, b) => (a >= b ? 1 : 0), wgsl: "select(0.0, 1.0, a >= b)" },
};

/**
 * A fused elementwise expression: a DAG over the inputs of one kernel. Nodes shared by
 * reference are computed once. Both backends evaluate it with the same op tables.
 */
export type FusedExpr =
  | { readonly kind: "input"; readonly index: number }
  | { readonly kind: "const"; readonly value: number }
  | {
    readonly kind: "unary";
    readonly op: UnaryOp;
    readonly x: FusedExpr;
    readonly p0: number;
    readonly p1: number;
  }
  | { readonly kind: "binary"; readonly op: BinaryOp; readonly a: FusedExpr; readonly b: FusedExpr }
  | { readonly kind: "where"; readonly c: FusedExpr; readonly a: FusedExpr; readonly b: FusedExpr };

/** Backend-owned memory for `size` f32 elements. */
export interface Storage {
  /** Number of f32 elements. */
  readonly size: number;
}

/** Batched matmul geometry. A is [batch, m, k] (or [batch, k, m] when transA), B is
 * [batch, k, n] (or [batch, n, k] when transB); a batch stride of 0 broadcasts. */
export interface MatmulGeom {
  batch: number;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  aBatchStride: number;
  bBatchStride: number;
}

/** A strided view: element `i` (row-major over `shape`) lives at `offset + Σ idx_d·strides_d`. */
export interface View {
  shape: readonly number[];
  strides: readonly number[];
  offset: number;
}

/** Philox state: a 64-bit key as two words and a 64-bit block counter as two words. */
export interface RandomState {
  key: readonly [number, number];
  counter: readonly [number, number];
}

/**
 * The interface both backends implement. Every method that returns a `Storage` allocates it;
 * inputs are never modified except `dst` in `copyInto`.
 */
export interface Backend {
  /** "cpu" or "webgpu". */
  readonly name: "cpu" | "webgpu";
  /** Human-readable description of the device in use. */
  readonly description: string;
  upload(data: Float32Array): Storage;
  read(s: Storage): Promise<Float32Array>;
  /** Synchronous read; only the CPU backend provides it. */
  readSync?(s: Storage): Float32Array;
  alloc(size: number): Storage;
  free(s: Storage): void;
  /** Bytes of storages allocated and not yet freed (garbage-collected leaks still count). */
  liveBytes(): number;
  /** Submit recorded work (no-op on CPU). */
  flush(): void;
  /** Wait until all submitted work has finished. */
  sync(): Promise<void>;
  fill(size: number, value: number): Storage;
  iota(size: number, start: number, step: number): Storage;
  unary(op: UnaryOp, x: Storage, p0: number, p1: number): Storage;
  /** `a` and `b` are read through strides aligned to `outShape` (0 on broadcast axes). */
  binary(
    op: BinaryOp,
    a: Storage,
    aStrides: readonly number[],
    b: Storage,
    bStrides: readonly number[],
    outShape: readonly number[],
  ): Storage;
  where(
    c: Storage,
    cStrides: readonly number[],
    a: Storage,
    aStrides: readonly number[],
    b: Storage,
    bStrides: readonly number[],
    outShape: readonly number[],
  ): Storage;
  /** Reduce `x` of `shape` over sorted `axes`; the result is contiguous over the kept axes. */
  reduce(op: ReduceOp, x: Storage, shape: readonly number[], axes: readonly number[]): Storage;
  matmul(a: Storage, b: Storage, g: MatmulGeom): Storage;
  /**
   * `act(matmul(a, b) + bias)` in one pass: `bias` (size `g.n`, or null) is added along the
   * last axis and the unary op `act` (parameter-free, or null) applied as the output is
   * stored. Optional: when absent, `lib/ops/linear.ts` composes matmul, add and unary.
   */
  matmulEpilogue?(
    a: Storage,
    b: Storage,
    g: MatmulGeom,
    bias: Storage | null,
    act: UnaryOp | null,
  ): Storage;
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
  random(kind: RandomKind, size: number, state: RandomState): Storage;
  /**
   * Evaluate several elementwise expressions over broadcast inputs in one pass (one kernel
   * on WebGPU). Optional: when absent, `lib/ops/fused.ts` runs the ops one by one.
   */
  fused?(
    outputs: readonly FusedExpr[],
    inputs: readonly Storage[],
    inputStrides: readonly (readonly number[])[],
    outShape: readonly number[],
  ): Storage[];
  /**
   * The same fused expression DAG over several groups of same-sized contiguous inputs (an
   * optimizer's p, g, m, v for every parameter) plus shared scalar storages (size ≥ 1, read at
   * element 0): input index `i < k` of the DAG is the group's input `i`, index `k + t` is
   * `scalars[t]`. Returns one array of fresh output storages (of the group's size) per group,
   * computed in as few dispatches as the binding limits allow (one on WebGPU when they fit).
   * `inPlace[t] ≥ 0` writes output t into the group's input `inPlace[t]` instead (returned as
   * that same storage; each element is read before it is written); the caller guarantees
   * such inputs are distinct from every other storage passed. Optional: when absent,
   * `lib/ops/fused.ts` calls `fused` once per group.
   */
  fusedGroups?(
    outputs: readonly FusedExpr[],
    groups: readonly { readonly inputs: readonly Storage[]; readonly size: number }[],
    scalars: readonly Storage[],
    inPlace?: readonly number[],
  ): Storage[][];
  /**
   * log Σ exp(x + v) along one axis of a contiguous `x [rows, cols]` in one pass (online
   * max and sum; one kernel on WebGPU): axis 1 gives `out[i] = log Σ_j exp(x[i, j] + v[j])`
   * (v has `cols` elements, out `rows`), axis 0 gives `out[j] = log Σ_i exp(x[i, j] + v[i])`
   * (v has `rows`, out `cols`). x + v is rounded to f32 first, as `binary("add")` would. Any
   * NaN term gives NaN; an all −∞ (or empty) line gives −∞. The result is written as
   * `scale · lse + shift` (default 1, 0). Optional: when absent, `lib/ops/lse.ts` composes
   * `logSumExp(add(x, v))`.
   */
  logSumExpAdd?(
    x: Storage,
    v: Storage,
    rows: number,
    cols: number,
    axis: 0 | 1,
    scale?: number,
    shift?: number,
  ): Storage;
}

// ---- Philox 4x32-10 (Salmon et al., SC'11), shared by both backends ----

const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;

function mulhilo(a: number, b: number): [number, number] {
  // 32x32 -> 64-bit product from 16-bit halves, exact in doubles.
  const aL = a & 0xffff, aH = a >>> 16, bL = b & 0xffff, bH = b >>> 16;
  const ll = aL * bL, lh = aL * bH, hl = aH * bL, hh = aH * bH;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  const hi = (hh + (lh >>> 16) + (hl >>> 16) + (mid >>> 16)) >>> 0;
  const lo = Math.imul(a, b) >>> 0;
  return [hi, lo];
}

/**
 * Philox 4x32-10 of one 128-bit counter block under a 64-bit key.
 *
 * @example
 * ```ts
 * import { philox4x32 } from "./backend.ts";
 * // Random123 known-answer test: counter 0, key 0.
 * const r = philox4x32([0, 0, 0, 0], [0, 0]);
 * if (r[0] !== 0x6627e8d5) throw new Error("bad");
 * ```
 */
export function philox4x32(
  ctr: readonly [number, number, number, number],
  key: readonly [number, number],
): [number, number, number, number] {
  let [c0, c1, c2, c3] = ctr;
  let [k0, k1] = key;
  for (let r = 0; r < 10; r++) {
    const [hi0, lo0] = mulhilo(PHILOX_M0, c0);
    const [hi1, lo1] = mulhilo(PHILOX_M1, c2);
    const n0 = (hi1 ^ c1 ^ k0) >>> 0;
    const n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 = (k0 + PHILOX_W0) >>> 0;
    k1 = (k1 + PHILOX_W1) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** WGSL Philox 4x32-10, word for word the same as `philox4x32`. */
export const WGSL_PHILOX = `
fn mulhilo_(a: u32, b: u32) -> vec2<u32> {
  let aL = a & 0xffffu; let aH = a >> 16u; let bL = b & 0xffffu; let bH = b >> 16u;
  let ll = aL * bL; let lh = aL * bH; let hl = aH * bL; let hh = aH * bH;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
  return vec2<u32>(hi, a * b);
}
fn philox_(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = ctr; var k = key;
  for (var r = 0u; r < 10u; r++) {
    let p0 = mulhilo_(0xd2511f53u, c.x);
    let p1 = mulhilo_(0xcd9e8d57u, c.z);
    c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    k = k + vec2<u32>(0x9e3779b9u, 0xbb67ae85u);
  }
  return c;
}
`;

/** Map a 32-bit word to a uniform float in [0, 1): top 24 bits, exact in f32 on both backends. */
export function u32ToUniform(w: number): number {
  return (w >>> 8) * (1 / 16777216);
}

/**
 * The random value of element `i` of a stream, the CPU definition the WGSL kernel follows:
 * uniform/bits use word `i % 4` of block `i / 4`; normal uses Box–Muller on the pair
 * (words 0,1 for even `i`, words 2,3 for odd `i`) of block `i / 2`.
 */
export function randomElement(kind: RandomKind, i: number, st: RandomState): number {
  const block = kind === "normal" ? Math.floor(i / 2) : Math.floor(i / 4);
  const lo = (st.counter[0] + block) >>> 0;
  const carry = st.counter[0] + block > 0xffffffff ? 1 : 0;
  const w = philox4x32([lo, (st.counter[1] + carry) >>> 0, 0, 0], st.key);
  if (kind === "normal") {
    const j = (i & 1) * 2;
    // u1 in (0, 1] so the log is finite.
    const u1 = ((w[j]! >>> 8) + 1) * (1 / 16777216);
    const u2 = u32ToUniform(w[j + 1]!);
    return Math.fround(Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2));
  }
  const word = w[i % 4]!;
  if (kind === "bits") {
    const f = new Float32Array(new Uint32Array([word]).buffer);
    return f[0]!;
  }
  return u32ToUniform(word);
}

/** Number of Philox blocks a stream of `size` elements of `kind` consumes. */
export function randomBlocks(kind: RandomKind, size: number): number {
  return kind === "normal" ? Math.ceil(size / 2) : Math.ceil(size / 4);
}
