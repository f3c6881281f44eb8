/**
 * @file Special values through every row of the elementwise op table: NaN, ±∞, ±0, and
 * ordinary values (including ±100, where exp over- and underflows), every unary row at several
 * parameter settings and every binary row on all pairs. The CPU backend is checked against
 * closed forms (JS Math functions and IEEE/C99 rules, with PyTorch's choices where IEEE leaves
 * one: sign(NaN) = 0, NaN-propagating maximum/minimum/clamp/relu), and WebGPU against the CPU.
 *
 * Comparison: the classes (NaN, +∞, −∞, +0, −0, finite) must agree, then finite values within
 * the op's tolerance. Exact rows must agree bit for bit up to the NaN payload, so a −0 where +0
 * is due fails. Tolerances: approximations of the closed form (tanh, sigmoid, silu, geluTanh
 * via exp; gelu, erf via A&S 7.1.26, |error| < 1.5e-7) rtol 1e-6, atol 2e-7; on WebGPU
 * transcendental rows rtol 2e-5, atol 2e-6 (Vulkan allows a few ulp) and f32 arithmetic that
 * may be fused or approximated (div, reciprocal, sqrt, rsqrt, affine) rtol 1e-6. WebGPU may
 * flush subnormal results to zero (WGSL allows it; lavapipe does, e.g. exp(−100)), so a CPU
 * subnormal matches a WebGPU zero.
 * @module
 */
import { strict as assert } from "node:assert";
import { type Backend, backendByName, type BinaryOp, type UnaryOp } from "../../mod.ts";
import { BINARY, UNARY } from "../../lib/ir.ts";
import { erf64 } from "../_ref.ts";
import { binaryOn, CPU, HAS_WEBGPU, unaryOn } from "../_helpers.ts";

const VALUES = [NaN, Infinity, -Infinity, 0, -0, 1, -1, 0.5, -2.5, 3, 100, -100];

// ---- closed forms (f64, rounded to f32 when compared)

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
// std::max / std::min as torch uses them (ties keep the first argument), NaN propagating.
const stdMax = (a: number, b: number) => (a < b ? b : a);
const stdMin = (a: number, b: number) => (b < a ? b : a);
const nanOr = (f: (...v: number[]) => number) => (...v: number[]) =>
  v.some(Number.isNaN) ? NaN : f(...v);
// C99 pow (as torch.pow): JS Math.pow differs only for a base of ±1 with a NaN or infinite
// exponent (C gives 1).
const cPow = (x: number, y: number) =>
  x === 1 || (Math.abs(x) === 1 && Math.abs(y) === Infinity) ? 1 : Math.pow(x, y);

const CLOSED_UNARY: Record<UnaryOp, (x: number, p0: number, p1: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  sin: Math.sin,
  cos: Math.cos,
  tanh: Math.tanh,
  sigmoid,
  silu: (x) => x * sigmoid(x),
  gelu: (x) => 0.5 * x * (1 + erf64(x * Math.SQRT1_2)),
  // torch.nn.GELU(approximate="tanh"); at −∞ it is −∞·0 = NaN, as exact gelu here and in torch.
  geluTanh: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  // Its derivative, PyTorch's GeluBackward: NaN at ±∞ (½x(1 − t²) is ∞·0 there, as in torch).
  geluTanhGrad: (x) => {
    const t = Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3));
    const inner = Math.sqrt(2 / Math.PI) * (1 + 3 * 0.044715 * x * x);
    return Number.isFinite(x) ? 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * inner : NaN;
  },
  relu: nanOr((x) => stdMax(x, 0) === 0 ? 0 : x),
  abs: Math.abs,
  sign: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0),
  square: (x) => x * x,
  reciprocal: (x) => 1 / x,
  floor: Math.floor,
  erf: erf64,
  affine: (x, a, b) => x * a + b,
  powScalar: (x, p) => cPow(x, p),
  clamp: (x, lo, hi) => (Number.isNaN(x) ? x : stdMin(stdMax(x, lo), hi)),
  gtScalar: (x, p) => (x > p ? 1 : 0),
  geScalar: (x, p) => (x >= p ? 1 : 0),
  ltScalar: (x, p) => (x < p ? 1 : 0),
  leScalar: (x, p) => (x <= p ? 1 : 0),
  eqScalar: (x, p) => (x === p ? 1 : 0),
  isNan: (x) => (Number.isNaN(x) ? 1 : 0),
  copy: (x) => x,
};

const CLOSED_BINARY: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: cPow,
  maximum: nanOr(stdMax),
  minimum: nanOr(stdMin),
  eq: (a, b) => (a === b ? 1 : 0),
  ne: (a, b) => (a !== b ? 1 : 0),
  lt: (a, b) => (a < b ? 1 : 0),
  le: (a, b) => (a <= b ? 1 : 0),
  gt: (a, b) => (a > b ? 1 : 0),
  ge: (a, b) => (a >= b ? 1 : 0),
};

/** Parameter settings per unary op ([p0, p1]); ops not listed take none. */
const PARAMS: Partial<Record<UnaryOp, [number, number][]>> = {
  affine: [[2, 1], [-0.5, 0], [0, -0]],
  powScalar: [[3, 0], [2, 0], [-1, 0], [-2, 0], [0.5, 0], [-0.5, 0], [0, 0]],
  clamp: [[-1, 2], [0, 0], [0, Infinity], [-Infinity, 0]],
  gtScalar: [[0, 0], [1, 0]],
  geScalar: [[0, 0], [1, 0]],
  ltScalar: [[0, 0], [1, 0]],
  leScalar: [[0, 0], [1, 0]],
  eqScalar: [[0, 0], [1, 0], [NaN, 0]],
};

type Tol = { rtol: number; atol: number } | "exact";
const EXACT: Tol = "exact";
// CPU vs the closed forms: the CPU evaluates in f64 and rounds once, so only the rows that
// approximate their closed form need a tolerance.
const CLOSE = { rtol: 1e-6, atol: 2e-7 };
const CPU_TOL: Partial<Record<UnaryOp | BinaryOp, Tol>> = {
  tanh: CLOSE,
  sigmoid: CLOSE,
  silu: CLOSE,
  gelu: CLOSE,
  geluTanh: CLOSE,
  geluTanhGrad: CLOSE,
  erf: CLOSE,
};
const TRANS = { rtol: 2e-5, atol: 2e-6 };
const F32 = { rtol: 1e-6, atol: 0 };
const GPU_TOL: Partial<Record<UnaryOp | BinaryOp, Tol>> = {
  exp: TRANS,
  log: TRANS,
  sin: TRANS,
  cos: TRANS,
  tanh: TRANS,
  sigmoid: TRANS,
  silu: TRANS,
  gelu: TRANS,
  geluTanh: TRANS,
  geluTanhGrad: TRANS,
  erf: TRANS,
  pow: TRANS,
  powScalar: TRANS,
  sqrt: F32,
  rsqrt: F32,
  reciprocal: F32,
  div: F32,
  affine: F32,
};

const MIN_NORMAL = 2 ** -126;
const show = (v: number) => (Object.is(v, -0) ? "-0" : String(v));

function kind(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === 0) return Object.is(v, -0) ? "-0" : "+0";
  if (!Number.isFinite(v)) return v > 0 ? "+inf" : "-inf";
  return "finite";
}

/** Why `got` does not match `want` under `tol` (null when it does). */
function mismatch(got: number, want: number, tol: Tol, flushOk: boolean): string | null {
  const kg = kind(got), kw = kind(want);
  if (flushOk && kw === "finite" && Math.abs(want) < MIN_NORMAL && (kg === "+0" || kg === "-0")) {
    return null;
  }
  if (tol === "exact") return kg === kw && (kg !== "finite" || got === want) ? null : "differs";
  if (kg !== kw) {
    // A tolerance may bridge a zero and a tiny finite value (erf(0) = 1e-9 by A&S), never a
    // NaN or an infinity.
    const zeroish = (k: string) => k === "+0" || k === "-0" || k === "finite";
    if (!(zeroish(kg) && zeroish(kw))) return "differs in kind";
  }
  if (kg === "NaN" || kg === "+inf" || kg === "-inf") return null;
  return Math.abs(got - want) <= tol.atol + tol.rtol * Math.abs(want) ? null : "out of tolerance";
}

function check(
  what: string,
  inputs: string[],
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: Tol,
  flushOk: boolean,
): void {
  const bad: string[] = [];
  for (let i = 0; i < got.length; i++) {
    const why = mismatch(got[i]!, want[i]!, tol, flushOk);
    if (why) bad.push(`${inputs[i]}: got ${show(got[i]!)}, want ${show(want[i]!)} (${why})`);
  }
  assert.deepEqual(bad, [], `${what}:\n  ${bad.join("\n  ")}`);
}

async function runUnary(be: Backend, op: UnaryOp, p0: number, p1: number): Promise<Float32Array> {
  const x = be.upload(Float32Array.from(VALUES));
  const y = unaryOn(be, op, x, p0, p1);
  const r = await be.read(y);
  be.free(x);
  be.free(y);
  return r;
}

const A = VALUES.flatMap((a) => VALUES.map(() => a)), B = VALUES.flatMap(() => VALUES);
const PAIRS = A.map((a, i) => `(${show(a)}, ${show(B[i]!)})`);

async function runBinary(be: Backend, op: BinaryOp): Promise<Float32Array> {
  const a = be.upload(Float32Array.from(A)), b = be.upload(Float32Array.from(B));
  const y = binaryOn(be, op, a, [1], b, [1], [A.length]);
  const r = await be.read(y);
  for (const s of [a, b, y]) be.free(s);
  return r;
}

const f32 = Math.fround;

Deno.test("op table on the CPU: every row on NaN, ±∞, ±0 and ordinary values matches its closed form", async () => {
  const xs = VALUES.map(show);
  for (const op of Object.keys(UNARY) as UnaryOp[]) {
    for (const [p0, p1] of PARAMS[op] ?? [[0, 0]]) {
      const got = await runUnary(CPU, op, p0, p1);
      const want = VALUES.map((x) => f32(CLOSED_UNARY[op](f32(x), f32(p0), f32(p1))));
      check(`cpu ${op}(x, ${p0}, ${p1})`, xs, got, want, CPU_TOL[op] ?? EXACT, false);
    }
  }
  for (const op of Object.keys(BINARY) as BinaryOp[]) {
    const got = await runBinary(CPU, op);
    const want = A.map((a, i) => f32(CLOSED_BINARY[op](a, B[i]!)));
    check(`cpu ${op}`, PAIRS, got, want, CPU_TOL[op] ?? EXACT, false);
  }
});

Deno.test({
  name: "op table on WebGPU: every row on NaN, ±∞, ±0 and ordinary values matches the CPU",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const GPU = backendByName("webgpu")!;
    const xs = VALUES.map(show);
    for (const op of Object.keys(UNARY) as UnaryOp[]) {
      for (const [p0, p1] of PARAMS[op] ?? [[0, 0]]) {
        const got = await runUnary(GPU, op, p0, p1), want = await runUnary(CPU, op, p0, p1);
        check(`webgpu ${op}(x, ${p0}, ${p1})`, xs, got, want, GPU_TOL[op] ?? EXACT, true);
      }
    }
    for (const op of Object.keys(BINARY) as BinaryOp[]) {
      const got = await runBinary(GPU, op), want = await runBinary(CPU, op);
      check(`webgpu ${op}`, PAIRS, got, want, GPU_TOL[op] ?? EXACT, true);
    }
  },
});

Deno.test("maximum, minimum, clamp and relu propagate NaN from either side, as in PyTorch", async () => {
  const bes: Backend[] = [CPU, ...(HAS_WEBGPU ? [backendByName("webgpu")!] : [])];
  for (const be of bes) {
    const a = be.upload(Float32Array.from([NaN, 1, NaN, -2])),
      b = be.upload(Float32Array.from([1, NaN, NaN, 3]));
    for (const op of ["maximum", "minimum"] as const) {
      const r = await be.read(binaryOn(be, op, a, [1], b, [1], [4]));
      assert.deepEqual([...r].map(show), ["NaN", "NaN", "NaN", op === "maximum" ? "3" : "-2"]);
    }
    const c = await be.read(unaryOn(be, "clamp", a, -1, 0.5));
    assert.deepEqual([...c].map(show), ["NaN", "0.5", "NaN", "-1"], `${be.name} clamp`);
    const r = await be.read(unaryOn(be, "relu", a));
    assert.deepEqual([...r].map(show), ["NaN", "1", "NaN", "0"], `${be.name} relu`);
  }
});
