/**
 * @file The engine's op vocabulary, pure data and functions (no GPU, no Tensor), imported by
 * the kernels, both backends and the Tensor layer alike:
 * - the elementwise op table: each unary and binary op is ONE row holding its CPU function,
 *   its WGSL expression and its derivative(s), written once as an expression over the same
 *   vocabulary. The CPU backend (the living spec), the WGSL code generator, forward mode,
 *   reverse mode and the fused activation backward all read that row, so they cannot drift
 *   apart; adding an elementwise op is one row here plus a test;
 * - `Expr`, the fused-expression IR (a DAG over a kernel's inputs) and `Fx`, its builder;
 * - reductions and the matmul geometry, the other ops kernels are generated for.
 * @module
 */
import type { Dyn } from "./capture.ts";

// ------------------------------------------------------------------------------- the IR

/**
 * A fused elementwise expression: a DAG over the inputs of one kernel. Nodes shared by
 * reference are computed once. `p0`/`p1` are scalar parameters of unary ops (a clamp's bounds,
 * an affine map's scale and shift).
 */
export type Expr =
  | { readonly kind: "input"; readonly index: number }
  | {
    readonly kind: "const";
    readonly value: number;
    /** Recomputes the value when a traced step is replayed (lib/capture.ts). */
    readonly dyn?: Dyn;
  }
  | {
    readonly kind: "unary";
    readonly op: UnaryOp;
    readonly x: Expr;
    readonly p0: number;
    readonly p1: number;
  }
  | { readonly kind: "binary"; readonly op: BinaryOp; readonly a: Expr; readonly b: Expr }
  | { readonly kind: "where"; readonly c: Expr; readonly a: Expr; readonly b: Expr };

/**
 * A node of a fused expression with a fluent builder API (`fused` hands these to its build
 * function; the op table writes derivatives with them).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Fx } from "./ir.ts";
 * const x = Fx.input(0);
 * const e = x.mul(2).add(1).un("tanh"); // tanh(2x + 1)
 * assert.equal(e.node.kind, "unary");
 * ```
 */
export class Fx {
  /** @internal Wrap a node (use `Fx.input`, `fx.const` or the methods). */
  constructor(readonly node: Expr) {}
  /** Input `index` of the kernel. */
  static input(index: number): Fx {
    return new Fx({ kind: "input", index });
  }
  /** this + o */
  add(o: Fx | number): Fx {
    return this.bin("add", o);
  }
  /** this − o */
  sub(o: Fx | number): Fx {
    return this.bin("sub", o);
  }
  /** this · o */
  mul(o: Fx | number): Fx {
    return this.bin("mul", o);
  }
  /** this / o */
  div(o: Fx | number): Fx {
    return this.bin("div", o);
  }
  /** max(this, o) */
  maximum(o: Fx | number): Fx {
    return this.bin("maximum", o);
  }
  /** min(this, o) */
  minimum(o: Fx | number): Fx {
    return this.bin("minimum", o);
  }
  /** A binary op of the table. */
  bin(op: BinaryOp, o: Fx | number): Fx {
    return new Fx({ kind: "binary", op, a: this.node, b: lift(o).node });
  }
  /** A unary op of the table (with optional scalar parameters). */
  un(op: UnaryOp, p0 = 0, p1 = 0): Fx {
    return new Fx({ kind: "unary", op, x: this.node, p0, p1 });
  }
  /** x·a + b with scalars (one op). */
  affine(a: number, b: number): Fx {
    return this.un("affine", a, b);
  }
  /** √x */
  sqrt(): Fx {
    return this.un("sqrt");
  }
  /** x² */
  square(): Fx {
    return this.un("square");
  }
  /** Clamp into [lo, hi]. */
  clamp(lo: number, hi: number): Fx {
    return this.un("clamp", lo, hi);
  }
}

function lift(x: Fx | number): Fx {
  return typeof x === "number" ? new Fx({ kind: "const", value: x }) : x;
}

/**
 * Helpers for building fused expressions: constants and `where`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Fx, fx } from "./ir.ts";
 * const x = Fx.input(0);
 * const r = fx.where(x.bin("gt", 0), x, fx.const(0)); // relu written by hand
 * assert.equal(r.node.kind, "where");
 * ```
 */
export const fx = {
  /**
   * A constant; with `dyn`, a per-step value (an optimizer's bias correction) that a replayed
   * trace recomputes instead of reusing `v` (lib/capture.ts).
   */
  const: (v: number, dyn?: Dyn): Fx =>
    new Fx(dyn ? { kind: "const", value: v, dyn } : { kind: "const", value: v }),
  /** c ? a : b (c nonzero = true; a NaN condition is true). */
  where: (c: Fx, a: Fx | number, b: Fx | number): Fx =>
    new Fx({ kind: "where", c: c.node, a: lift(a).node, b: lift(b).node }),
};

// ------------------------------------------------------- shared math of both backends

// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): WGSL has no erf, and both backends must use
// the same formula so that gelu agrees across them.
const ERF_A = [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429];
const ERF_P = 0.3275911;
const INV_SQRT_2PI = 0.3989422804014327;
const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
// GELU's tanh approximation, u = √(2/π)(x + 0.044715·x³): PyTorch's kBeta and kKappa.
const SQRT_2_OVER_PI = 0.7978845608028654;
const GELU_KAPPA = 0.044715;

/**
 * The erf approximation both backends use (A&S 7.1.26).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { erfApprox } from "./ir.ts";
 * // erf(1) = 0.8427007929497149 (Abramowitz & Stegun, table 7.1); erf is odd.
 * assert.ok(Math.abs(erfApprox(1) - 0.8427007929497149) < 2e-7);
 * assert.ok(Math.abs(erfApprox(-1) + 0.8427007929497149) < 2e-7);
 * ```
 */
export function erfApprox(x: number): number {
  const s = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  const t = 1 / (1 + ERF_P * a);
  const y = 1 -
    ((((ERF_A[4]! * t + ERF_A[3]!) * t + ERF_A[2]!) * t + ERF_A[1]!) * t + ERF_A[0]!) * t *
      Math.exp(-a * a);
  return s * y;
}

/**
 * WGSL helper functions that the table's WGSL expressions may call (every generated
 * elementwise kernel includes them).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { WGSL_HELPERS } from "./ir.ts";
 * assert.ok(WGSL_HELPERS.includes("fn erf_("));
 * ```
 */
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
fn gelu_tanh_grad_(x: f32) -> f32 {
  let t = tanh_(${SQRT_2_OVER_PI} * (x + ${GELU_KAPPA} * (x * x * x)));
  let h = 0.5 * x * (1.0 - t * t);
  return 0.5 * (1.0 + t) + (h * ${SQRT_2_OVER_PI} + h * x * x * ${3 * GELU_KAPPA * SQRT_2_OVER_PI});
}
fn sigmoid_(x: f32) -> f32 {
  let e = exp(-abs(x));
  return select(1.0 / (1.0 + e), e / (1.0 + e), x < 0.0);
}
fn isnan_(x: f32) -> bool {
  // On the bits: WGSL lets compilers assume floats are finite and fold x != x to false.
  return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}
fn clamp_(x: f32, lo: f32, hi: f32) -> f32 {
  // min(max(x, lo), hi) with NaN kept (WGSL min/max may map NaN to a bound; lavapipe does).
  let t = select(x, lo, x < lo);
  return select(select(t, hi, t > hi), x, isnan_(x));
}
fn pow_(x: f32, y: f32) -> f32 {
  // C99 pow (Annex F.9.4.4), as torch.pow and the CPU backend. WGSL's pow is undefined for
  // x < 0 and at zeros, infinities and NaN (lavapipe turns a NaN into a number), so every
  // special case is decided here, on the bits where a NaN could hide.
  let xb = bitcast<u32>(x);
  let yb = bitcast<u32>(y) & 0x7fffffffu;
  if (yb == 0u || xb == 0x3f800000u) { return 1.0; }
  if (isnan_(x) || isnan_(y)) { return bitcast<f32>(0x7fc00000u); }
  let inf = bitcast<f32>(0x7f800000u);
  let ax = abs(x);
  let ay = abs(y);
  let neg = (xb >> 31u) == 1u;
  let yInf = yb == 0x7f800000u;
  let yInt = !yInf && floor(y) == y;
  let odd = yInt && ay < 16777216.0 && (ay % 2.0) == 1.0;
  if (yInf) {
    if (ax == 1.0) { return 1.0; }
    return select(0.0, inf, (ax < 1.0) == (y < 0.0));
  }
  if ((xb & 0x7fffffffu) == 0u) {
    if (y < 0.0) { return select(inf, select(inf, -inf, neg), odd); }
    return select(0.0, x, odd);
  }
  if ((xb & 0x7fffffffu) == 0x7f800000u) {
    if (!neg) { return select(inf, 0.0, y < 0.0); }
    if (y < 0.0) { return select(0.0, bitcast<f32>(0x80000000u), odd); }
    return select(inf, -inf, odd);
  }
  let r = pow(ax, y);
  if (!neg) { return r; }
  if (!yInt) { return bitcast<f32>(0x7fc00000u); }
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
// x³ as x·x·x and the factors in the order of PyTorch's gelu kernel (approximate="tanh"), so the
// f32 kernels round where PyTorch's does (a pow would also cost pow_'s special-case branches).
function geluTanhCpu(x: number): number {
  const u = SQRT_2_OVER_PI * (x + GELU_KAPPA * (x * x * x));
  return 0.5 * x * (1 + tanhCpu(u));
}
// d geluTanh / dx = ½(1 + t) + h·√(2/π)(1 + 3·0.044715·x²) with h = ½x(1 − t²), as PyTorch's
// GeluBackward (approximate="tanh"), the last product expanded to h·√(2/π) + ((h·x)·x)·3·0.044715
// ·√(2/π): h is exactly 0 where t saturates, so in f32 (WGSL, wasm) the x² factor never meets
// it as an overflow (0·∞); every finite x has a finite derivative, 1 or 0 in the tails.
function geluTanhGradCpu(x: number): number {
  const t = tanhCpu(SQRT_2_OVER_PI * (x + GELU_KAPPA * (x * x * x)));
  const h = 0.5 * x * (1 - t * t);
  return 0.5 * (1 + t) + (h * SQRT_2_OVER_PI + h * x * x * (3 * GELU_KAPPA * SQRT_2_OVER_PI));
}
// C99 pow (Annex F.9.4.4), as torch.pow; `pow_` in WGSL_HELPERS follows it branch for branch.
function powCpu(x: number, y: number): number {
  if (y === 0 || x === 1) return 1;
  if (Number.isNaN(x) || Number.isNaN(y)) return NaN;
  const ax = Math.abs(x), ay = Math.abs(y);
  const neg = x < 0 || Object.is(x, -0);
  const yInf = ay === Infinity;
  const yInt = !yInf && Math.floor(y) === y;
  const odd = yInt && ay < 16777216 && ay % 2 === 1;
  if (yInf) return ax === 1 ? 1 : (ax < 1) === (y < 0) ? Infinity : 0;
  if (x === 0) return y < 0 ? (odd && neg ? -Infinity : Infinity) : odd ? x : 0;
  if (ax === Infinity) {
    if (!neg) return y < 0 ? 0 : Infinity;
    return y < 0 ? (odd ? -0 : 0) : odd ? -Infinity : Infinity;
  }
  const r = Math.pow(ax, y);
  if (!neg) return r;
  if (!yInt) return NaN;
  return odd ? -r : r;
}
function clampCpu(x: number, lo: number, hi: number): number {
  if (Number.isNaN(x)) return x;
  const t = x < lo ? lo : x;
  return t > hi ? hi : t;
}

// ------------------------------------------------------------------- the op table

/**
 * A derivative as the table writes it: an expression (or a constant), or null where it is
 * zero everywhere (piecewise-constant ops).
 */
export type Deriv = Fx | number | null;

/**
 * One elementwise unary op. `cpu` gets `p0`, `p1` already rounded to f32, as the kernels read
 * them. `d` gives d op(x) / dx from leaves `x` (the input), `y` (the output) and the scalars;
 * `d: null` marks an op whose derivative is zero everywhere.
 */
export interface UnaryRow {
  /** The CPU definition (the spec), one element at a time. */
  readonly cpu: (x: number, p0: number, p1: number) => number;
  /** WGSL expression over `x: f32`, `p0: f32`, `p1: f32` (may call `WGSL_HELPERS`). */
  readonly wgsl: string;
  /** d op(x) / dx. */
  readonly d: ((v: { x: Fx; y: Fx; p0: number; p1: number }) => Deriv) | null;
}

/**
 * Names of the elementwise unary ops: the keys of `UNARY` (spelled out because the rows'
 * derivatives are typed by it; the compiler checks that names and rows match).
 */
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
  | "geluTanh"
  | "geluTanhGrad"
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

/**
 * The unary op table.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { UNARY } from "./ir.ts";
 * assert.equal(UNARY.tanh.cpu(0, 0, 0), 0);
 * assert.ok(Math.abs(UNARY.tanh.cpu(1, 0, 0) - (Math.E ** 2 - 1) / (Math.E ** 2 + 1)) < 1e-12);
 * assert.ok(UNARY.tanh.wgsl.includes("tanh_"));
 * ```
 */
export const UNARY: { readonly [K in UnaryOp]: UnaryRow } = {
  neg: { cpu: (x) => -x, wgsl: "-x", d: () => -1 },
  exp: { cpu: Math.exp, wgsl: "exp(x)", d: ({ y }) => y },
  log: { cpu: Math.log, wgsl: "log(x)", d: ({ x }) => x.un("reciprocal") },
  sqrt: { cpu: Math.sqrt, wgsl: "sqrt(x)", d: ({ y }) => y.un("reciprocal").affine(0.5, 0) },
  rsqrt: {
    cpu: (x) => 1 / Math.sqrt(x),
    wgsl: "inverseSqrt(x)",
    d: ({ y }) => y.un("powScalar", 3).affine(-0.5, 0),
  },
  sin: { cpu: Math.sin, wgsl: "sin(x)", d: ({ x }) => x.un("cos") },
  cos: { cpu: Math.cos, wgsl: "cos(x)", d: ({ x }) => x.un("sin").un("neg") },
  tanh: { cpu: tanhCpu, wgsl: "tanh_(x)", d: ({ y }) => y.square().affine(-1, 1) },
  sigmoid: { cpu: sigmoidCpu, wgsl: "sigmoid_(x)", d: ({ y }) => y.mul(y.affine(-1, 1)) },
  silu: {
    cpu: (x) => x * sigmoidCpu(x),
    wgsl: "x * sigmoid_(x)",
    // s + x·s·(1 − s), s = sigmoid(x)
    d: ({ x }) => {
      const s = x.un("sigmoid");
      return s.add(x.mul(s).mul(s.affine(-1, 1)));
    },
  },
  gelu: {
    cpu: (x) => 0.5 * x * (1 + erfApprox(x * Math.SQRT1_2)),
    wgsl: "0.5 * x * (1.0 + erf_(x * 0.7071067811865476))",
    // Φ(x) + x·φ(x)
    d: ({ x }) => {
      const cdf = x.affine(Math.SQRT1_2, 0).un("erf").affine(0.5, 0.5);
      const pdf = x.square().affine(-0.5, 0).un("exp").affine(INV_SQRT_2PI, 0);
      return cdf.add(x.mul(pdf));
    },
  },
  // GELU with the tanh approximation (torch.nn.GELU(approximate="tanh"), DiT's MLP) as one op:
  // one kernel and one tape node instead of eight. tanh_ saturates to ±1 without overflow, so
  // large |x| gives x or −0 and a derivative of 1 or 0 (the (1 − t²) factor is exactly 0 there).
  geluTanh: {
    cpu: geluTanhCpu,
    wgsl: `0.5 * x * (1.0 + tanh_(${SQRT_2_OVER_PI} * (x + ${GELU_KAPPA} * (x * x * x))))`,
    // One op of its own (below), so a backward pass is g·geluTanhGrad(x): one kernel of two ops
    // where the derivative written in table ops was sixteen, tanh included.
    d: ({ x }) => x.un("geluTanhGrad"),
  },
  // d geluTanh / dx = ½(1 + t) + ½x(1 − t²)·u', t = tanh(u), u' = √(2/π)(1 + 3·0.044715·x²): the
  // backward of DiT's activation as one op. Its own derivative (second order) is composite:
  // (1 − t²)·(√(2/π) + 6·0.044715·√(2/π)·x²) − x(1 − t²)·t·u'², products taken from the
  // (1 − t²) side, so they are 0 where t saturates before x² can overflow.
  geluTanhGrad: {
    cpu: geluTanhGradCpu,
    wgsl: "gelu_tanh_grad_(x)",
    d: ({ x }) => {
      const t = x.mul(x).mul(x).affine(GELU_KAPPA, 0).add(x).affine(SQRT_2_OVER_PI, 0).un("tanh");
      const s = t.square().affine(-1, 1);
      const up = x.square().affine(3 * GELU_KAPPA * SQRT_2_OVER_PI, SQRT_2_OVER_PI);
      const sx = s.mul(x);
      const even = s.affine(SQRT_2_OVER_PI, 0).add(
        sx.mul(x).affine(6 * GELU_KAPPA * SQRT_2_OVER_PI, 0),
      );
      return even.sub(sx.mul(t).mul(up).mul(up));
    },
  },
  // From the output (relu(x) > 0 exactly when x > 0), so a fused linear layer's backward
  // needs no pre-activation.
  // NaN propagates, as in torch.relu.
  relu: {
    cpu: (x) => (x > 0 || Number.isNaN(x) ? x : 0),
    wgsl: "select(0.0, x, x > 0.0 || isnan_(x))",
    d: ({ y }) => y.un("gtScalar", 0),
  },
  abs: { cpu: Math.abs, wgsl: "abs(x)", d: ({ x }) => x.un("sign") },
  // sign(NaN) = 0 and sign(±0) = +0, as torch.sign. WGSL's sign leaves both open, and selects
  // of float constants came out as −0 for 0 on lavapipe, so the sign is an integer converted.
  sign: {
    cpu: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0),
    wgsl: "f32(select(select(0i, 1i, x > 0.0) - select(0i, 1i, x < 0.0), 0i, isnan_(x)))",
    d: null,
  },
  square: { cpu: (x) => x * x, wgsl: "x * x", d: ({ x }) => x.affine(2, 0) },
  reciprocal: { cpu: (x) => 1 / x, wgsl: "1.0 / x", d: ({ y }) => y.square().un("neg") },
  floor: { cpu: Math.floor, wgsl: "floor(x)", d: null },
  erf: {
    cpu: erfApprox,
    wgsl: "erf_(x)",
    d: ({ x }) => x.square().affine(-1, 0).un("exp").affine(TWO_OVER_SQRT_PI, 0),
  },
  affine: { cpu: (x, a, b) => x * a + b, wgsl: "x * p0 + p1", d: ({ p0 }) => p0 },
  powScalar: {
    cpu: (x, p) => powCpu(x, p),
    wgsl: "pow_(x, p0)",
    d: ({ x, p0 }) => (p0 === 0 ? null : x.un("powScalar", p0 - 1).affine(p0, 0)),
  },
  // min(max(x, lo), hi) with NaN kept, as torch.clamp.
  clamp: {
    cpu: clampCpu,
    wgsl: "clamp_(x, p0, p1)",
    d: ({ x, p0, p1 }) => x.un("geScalar", p0).mul(x.un("leScalar", p1)),
  },
  gtScalar: { cpu: (x, p) => (x > p ? 1 : 0), wgsl: "select(0.0, 1.0, x > p0)", d: null },
  geScalar: { cpu: (x, p) => (x >= p ? 1 : 0), wgsl: "select(0.0, 1.0, x >= p0)", d: null },
  ltScalar: { cpu: (x, p) => (x < p ? 1 : 0), wgsl: "select(0.0, 1.0, x < p0)", d: null },
  leScalar: { cpu: (x, p) => (x <= p ? 1 : 0), wgsl: "select(0.0, 1.0, x <= p0)", d: null },
  eqScalar: { cpu: (x, p) => (x === p ? 1 : 0), wgsl: "select(0.0, 1.0, x == p0)", d: null },
  // NaN is tested on the bits: WGSL lets compilers fold `x != x` to false (lavapipe does).
  isNan: {
    cpu: (x) => (Number.isNaN(x) ? 1 : 0),
    wgsl: "select(0.0, 1.0, isnan_(x))",
    d: null,
  },
  copy: { cpu: (x) => x, wgsl: "x", d: () => 1 },
};

/**
 * One elementwise binary op (NumPy broadcasting; comparisons return 1 or 0). `d` gives
 * [∂out/∂a, ∂out/∂b] from leaves `a`, `b` and `y` (the output); `d: null` marks an op whose
 * derivative is zero everywhere.
 */
export interface BinaryRow {
  /** The CPU definition (the spec), one element at a time. */
  readonly cpu: (a: number, b: number) => number;
  /** WGSL expression over `a: f32`, `b: f32` (may call `WGSL_HELPERS`). */
  readonly wgsl: string;
  /** [∂out/∂a, ∂out/∂b]. */
  readonly d: ((v: { a: Fx; b: Fx; y: Fx }) => readonly [Deriv, Deriv]) | null;
}

/** Names of the elementwise binary ops: the keys of `BINARY` (see `UnaryOp`). */
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

/**
 * The binary op table.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { BINARY } from "./ir.ts";
 * assert.equal(BINARY.sub.cpu(5, 3), 2);
 * assert.equal(BINARY.sub.wgsl, "a - b");
 * ```
 */
export const BINARY: { readonly [K in BinaryOp]: BinaryRow } = {
  add: { cpu: (a, b) => a + b, wgsl: "a + b", d: () => [1, 1] },
  sub: { cpu: (a, b) => a - b, wgsl: "a - b", d: () => [1, -1] },
  mul: { cpu: (a, b) => a * b, wgsl: "a * b", d: ({ a, b }) => [b, a] },
  div: {
    cpu: (a, b) => a / b,
    wgsl: "a / b",
    d: ({ b, y }) => [b.un("reciprocal"), y.div(b).un("neg")],
  },
  pow: {
    cpu: powCpu,
    wgsl: "pow_(a, b)",
    d: ({ a, b, y }) => [b.mul(a.bin("pow", b.affine(1, -1))), y.mul(a.un("log"))],
  },
  // NaN on either side propagates, as torch.maximum/minimum; ties keep a (as std::max). WGSL
  // max/min are undefined for NaN, so select() with NaN tested on the bits.
  maximum: {
    cpu: (a, b) => (Number.isNaN(a) ? a : Number.isNaN(b) ? b : a >= b ? a : b),
    wgsl: "select(select(select(b, a, a >= b), b, isnan_(b)), a, isnan_(a))",
    d: ({ a, b }) => [a.bin("ge", b), a.bin("lt", b)],
  },
  minimum: {
    cpu: (a, b) => (Number.isNaN(a) ? a : Number.isNaN(b) ? b : a <= b ? a : b),
    wgsl: "select(select(select(b, a, a <= b), b, isnan_(b)), a, isnan_(a))",
    d: ({ a, b }) => [a.bin("le", b), a.bin("gt", b)],
  },
  eq: { cpu: (a, b) => (a === b ? 1 : 0), wgsl: "select(0.0, 1.0, a == b)", d: null },
  // Negated ==: lavapipe compiles != as an ordered comparison, false for NaN.
  ne: { cpu: (a, b) => (a !== b ? 1 : 0), wgsl: "select(1.0, 0.0, a == b)", d: null },
  lt: { cpu: (a, b) => (a < b ? 1 : 0), wgsl: "select(0.0, 1.0, a < b)", d: null },
  le: { cpu: (a, b) => (a <= b ? 1 : 0), wgsl: "select(0.0, 1.0, a <= b)", d: null },
  gt: { cpu: (a, b) => (a > b ? 1 : 0), wgsl: "select(0.0, 1.0, a > b)", d: null },
  ge: { cpu: (a, b) => (a >= b ? 1 : 0), wgsl: "select(0.0, 1.0, a >= b)", d: null },
};

/**
 * The row of a unary op, or a RangeError naming the op (user input reaches here as a string).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { unaryRow } from "./ir.ts";
 * assert.ok(Math.abs(unaryRow("exp").cpu(1, 0, 0) - Math.E) < 1e-12);
 * ```
 */
export function unaryRow(op: UnaryOp): UnaryRow {
  const row: UnaryRow | undefined = Object.hasOwn(UNARY, op) ? UNARY[op] : undefined;
  if (!row) {
    throw new RangeError(
      `Unknown unary op "${op}": expected one of ${Object.keys(UNARY).join(", ")}`,
    );
  }
  return row;
}

/**
 * The row of a binary op, or a RangeError naming the op.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { binaryRow } from "./ir.ts";
 * assert.equal(binaryRow("mul").cpu(3, 4), 12);
 * ```
 */
export function binaryRow(op: BinaryOp): BinaryRow {
  const row: BinaryRow | undefined = Object.hasOwn(BINARY, op) ? BINARY[op] : undefined;
  if (!row) {
    throw new RangeError(
      `Unknown binary op "${op}": expected one of ${Object.keys(BINARY).join(", ")}`,
    );
  }
  return row;
}

// ----------------------------------------------------------- derivatives as expressions

function node(d: Deriv): Expr | null {
  if (d === null) return null;
  return typeof d === "number" ? { kind: "const", value: d } : d.node;
}

/**
 * d op(x)/dx of a unary op as an expression over the given leaves (null where it is zero).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Fx, unaryDerivative } from "./ir.ts";
 * // d exp(x) = exp(x): with input 1 holding the forward value, the derivative is input 1.
 * const d = unaryDerivative("exp", Fx.input(0).node, Fx.input(1).node, 0, 0);
 * assert.equal(d?.kind, "input");
 * assert.equal(d?.kind === "input" && d.index, 1);
 * ```
 */
export function unaryDerivative(
  op: UnaryOp,
  x: Expr,
  y: Expr,
  p0: number,
  p1: number,
): Expr | null {
  const d = unaryRow(op).d;
  return d ? node(d({ x: new Fx(x), y: new Fx(y), p0, p1 })) : null;
}

/**
 * [∂out/∂a, ∂out/∂b] of a binary op as expressions over the given leaves (null where zero).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { binaryDerivatives, Fx } from "./ir.ts";
 * const [da] = binaryDerivatives("mul", Fx.input(0).node, Fx.input(1).node, Fx.input(2).node);
 * // ∂(ab)/∂a = b (input 1)
 * assert.equal(da?.kind === "input" && da.index, 1);
 * ```
 */
export function binaryDerivatives(
  op: BinaryOp,
  a: Expr,
  b: Expr,
  y: Expr,
): [Expr | null, Expr | null] {
  const d = binaryRow(op).d;
  if (!d) return [null, null];
  const [da, db] = d({ a: new Fx(a), b: new Fx(b), y: new Fx(y) });
  return [node(da), node(db)];
}

/**
 * The chain rule `g · d` as one expression, simplified so that the common cases cost nothing
 * extra: d = 1 gives `g` itself, d = −1 `−g`, a constant c `g·c` (one affine op), and
 * d = 1/z gives `g / z` (one rounding instead of two).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { chain, Fx } from "./ir.ts";
 * const g = Fx.input(0).node;
 * assert.equal(chain(g, { kind: "const", value: 1 }), g); // g · 1 = g
 * ```
 */
export function chain(g: Expr, d: Expr): Expr {
  if (d.kind === "const") {
    if (d.value === 1) return g;
    if (d.value === -1) return { kind: "unary", op: "neg", x: g, p0: 0, p1: 0 };
    return { kind: "unary", op: "affine", x: g, p0: d.value, p1: 0 };
  }
  if (d.kind === "unary" && d.op === "reciprocal") {
    return { kind: "binary", op: "div", a: g, b: d.x };
  }
  return { kind: "binary", op: "mul", a: g, b: d };
}

/**
 * Indices of the inputs an expression DAG reads, sorted.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { exprInputs, Fx } from "./ir.ts";
 * const e = Fx.input(2).mul(Fx.input(0)).node;
 * assert.deepEqual(exprInputs([e]), [0, 2]);
 * ```
 */
export function exprInputs(outputs: readonly Expr[]): number[] {
  const seen = new Set<Expr>(), used = new Set<number>();
  const walk = (e: Expr): void => {
    if (seen.has(e)) return;
    seen.add(e);
    switch (e.kind) {
      case "input":
        used.add(e.index);
        return;
      case "const":
        return;
      case "unary":
        return walk(e.x);
      case "binary":
        walk(e.a);
        return walk(e.b);
      case "where":
        walk(e.c);
        walk(e.a);
        return walk(e.b);
    }
  };
  outputs.forEach(walk);
  return [...used].sort((a, b) => a - b);
}

/**
 * The same DAGs with input `i` renumbered to `map[i]` (sharing kept).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Fx, renumberInputs } from "./ir.ts";
 * const [e] = renumberInputs([Fx.input(3).node], new Map([[3, 0]]));
 * assert.equal(e?.kind === "input" && e.index, 0);
 * ```
 */
export function renumberInputs(outputs: readonly Expr[], map: ReadonlyMap<number, number>): Expr[] {
  const memo = new Map<Expr, Expr>();
  const walk = (e: Expr): Expr => {
    const have = memo.get(e);
    if (have) return have;
    let r: Expr;
    switch (e.kind) {
      case "input":
        r = { kind: "input", index: map.get(e.index) ?? e.index };
        break;
      case "const":
        r = e;
        break;
      case "unary":
        r = { ...e, x: walk(e.x) };
        break;
      case "binary":
        r = { ...e, a: walk(e.a), b: walk(e.b) };
        break;
      case "where":
        r = { ...e, c: walk(e.c), a: walk(e.a), b: walk(e.b) };
        break;
    }
    memo.set(e, r);
    return r;
  };
  return outputs.map(walk);
}

// ------------------------------------------------------- derivatives of whole expressions

/** The nodes of DAGs in post order (every node after the nodes it reads). */
function postOrder(outputs: readonly Expr[]): Expr[] {
  const seen = new Set<Expr>(), order: Expr[] = [];
  const walk = (e: Expr): void => {
    if (seen.has(e)) return;
    seen.add(e);
    switch (e.kind) {
      case "unary":
        walk(e.x);
        break;
      case "binary":
        walk(e.a);
        walk(e.b);
        break;
      case "where":
        walk(e.c);
        walk(e.a);
        walk(e.b);
        break;
    }
    order.push(e);
  };
  outputs.forEach(walk);
  return order;
}

const ZERO: Expr = { kind: "const", value: 0 };
const plus = (a: Expr | undefined, b: Expr): Expr => a ? { kind: "binary", op: "add", a, b } : b;

/**
 * Reverse mode over one expression DAG: `g · ∂out/∂in_i` for each of `n` inputs, as
 * expressions over the same inputs plus the cotangent `g` (null where the derivative is zero).
 * Each op's derivative comes from its row of the op table, so evaluating the result in one
 * fused kernel computes what the op-by-op chain rule computes.
 *
 * @example
 * ```ts
 * import { exprVjp, Fx } from "./ir.ts";
 * const x = Fx.input(0), g = Fx.input(1).node;
 * const [dx] = exprVjp(x.mul(x).node, g, 1); // g·x + g·x
 * if (dx?.kind !== "binary") throw new Error("bad");
 * ```
 */
export function exprVjp(out: Expr, g: Expr, n: number): (Expr | null)[] {
  const adj = new Map<Expr, Expr>([[out, g]]);
  const res: (Expr | null)[] = new Array(n).fill(null);
  const order = postOrder([out]);
  for (let i = order.length - 1; i >= 0; i--) {
    const e = order[i]!;
    const a = adj.get(e);
    if (!a) continue;
    switch (e.kind) {
      case "input":
        if (e.index < n) res[e.index] = plus(res[e.index] ?? undefined, a);
        break;
      case "const":
        break;
      case "unary": {
        const d = unaryDerivative(e.op, e.x, e, e.p0, e.p1);
        if (d) adj.set(e.x, plus(adj.get(e.x), chain(a, d)));
        break;
      }
      case "binary": {
        const [da, db] = binaryDerivatives(e.op, e.a, e.b, e);
        if (da) adj.set(e.a, plus(adj.get(e.a), chain(a, da)));
        if (db) adj.set(e.b, plus(adj.get(e.b), chain(a, db)));
        break;
      }
      case "where":
        adj.set(e.a, plus(adj.get(e.a), { kind: "where", c: e.c, a, b: ZERO }));
        adj.set(e.b, plus(adj.get(e.b), { kind: "where", c: e.c, a: ZERO, b: a }));
        break;
    }
  }
  return res;
}

/**
 * Forward mode over one expression DAG: `Σ_i ∂out/∂in_i · t_i` given a tangent expression (or
 * null for zero) per input, or null when every contributing tangent is zero.
 *
 * @example
 * ```ts
 * import { exprJvp, Fx } from "./ir.ts";
 * const e = Fx.input(0).un("exp").node;
 * const t = exprJvp(e, [Fx.input(1).node]); // t·exp(x)
 * if (t?.kind !== "binary") throw new Error("bad");
 * ```
 */
export function exprJvp(out: Expr, tangents: readonly (Expr | null)[]): Expr | null {
  const tan = new Map<Expr, Expr | null>();
  for (const e of postOrder([out])) {
    let t: Expr | null = null;
    switch (e.kind) {
      case "input":
        t = tangents[e.index] ?? null;
        break;
      case "const":
        break;
      case "unary": {
        const tx = tan.get(e.x);
        const d = tx ? unaryDerivative(e.op, e.x, e, e.p0, e.p1) : null;
        t = tx && d ? chain(tx, d) : null;
        break;
      }
      case "binary": {
        const ta = tan.get(e.a), tb = tan.get(e.b);
        if (!ta && !tb) break;
        const [da, db] = binaryDerivatives(e.op, e.a, e.b, e);
        const pa = ta && da ? chain(ta, da) : null, pb = tb && db ? chain(tb, db) : null;
        t = pa && pb ? plus(pa, pb) : pa ?? pb;
        break;
      }
      case "where": {
        const ta = tan.get(e.a), tb = tan.get(e.b);
        if (ta || tb) t = { kind: "where", c: e.c, a: ta ?? ZERO, b: tb ?? ZERO };
        break;
      }
    }
    tan.set(e, t);
  }
  return tan.get(out) ?? null;
}

// ---------------------------------------------------------------- the other op kinds

/** Reductions over a set of axes. Arg-reductions return f32 indices into the flattened axes. */
export type ReduceOp = "sum" | "max" | "min" | "argmax" | "argmin";

/** Batched matmul geometry. A is [batch, m, k] (or [batch, k, m] when transA), B is
 * [batch, k, n] (or [batch, n, k] when transB); a batch stride of 0 broadcasts. */
export interface MatmulGeom {
  /** Number of matrices. */
  batch: number;
  /** Rows of A and of the output. */
  m: number;
  /** Columns of B and of the output. */
  n: number;
  /** The contracted dimension. */
  k: number;
  /** A is stored transposed ([batch, k, m]). */
  transA: boolean;
  /** B is stored transposed ([batch, n, k]). */
  transB: boolean;
  /** Elements between consecutive A matrices (0 broadcasts one A). */
  aBatchStride: number;
  /** Elements between consecutive B matrices (0 broadcasts one B). */
  bBatchStride: number;
}
