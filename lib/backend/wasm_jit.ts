/**
 * @file The `wasm` backend's elementwise compiler: an expression DAG (lib/ir.ts) becomes one
 * WebAssembly function over `f32x4` vectors, assembled here byte by byte (a few dozen opcodes
 * of the core and SIMD specs; no assembler at run time). Transcendentals are the usual f32
 * approximations: exp by Cody–Waite reduction and Cephes' degree-6 polynomial (≤ 2 ulp), and
 * sigmoid, tanh, SiLU, erf and GELU built on it as the CPU backend builds them on Math.exp
 * (GELU-tanh and its derivative on a cheaper 2^t of their own, see geluSigmoid) — so results
 * agree with the CPU backend to a few ulp, not bit for bit (the JavaScript loops stay the
 * fallback for ops without a vector form: log, sin, cos, pow, clamp …).
 *
 * Why: the JavaScript loop ran Math.exp at ~13 ns an element, which made SiLU's forward,
 * backward and tangent passes as costly as the matmuls of a flow-map step; four lanes of a
 * polynomial cost ~0.5 ns an element.
 * @module
 */
import type { Expr } from "../ir.ts";
import { section, sleb, uleb } from "../../kernels/wasm_encode.ts";

/** How a kernel reads an input over [rows, cols]: contiguous, one value, per column, per row. */
export type SimdAccess = "dense" | "scalar" | "row" | "col";

const enum Op {
  block = 0x02,
  loop = 0x03,
  br = 0x0c,
  brIf = 0x0d,
  end = 0x0b,
  localGet = 0x20,
  localSet = 0x21,
  localTee = 0x22,
  i32Const = 0x41,
  i32LtU = 0x49,
  i32GtU = 0x4b,
  i32GeU = 0x4f,
  i32Add = 0x6a,
  i32Mul = 0x6c,
  i32Shl = 0x74,
}
// SIMD opcodes (prefix 0xfd).
const S = {
  load: 0x00,
  load32Splat: 0x09,
  store: 0x0b,
  const: 0x0c,
  eq: 0x41,
  ne: 0x42,
  lt: 0x43,
  gt: 0x44,
  le: 0x45,
  ge: 0x46,
  and: 0x4e,
  or: 0x50,
  bitselect: 0x52,
  floor: 0x68,
  nearest: 0x6a,
  i32Splat: 0x11,
  i32Shl: 0xab,
  i32ShrS: 0xac,
  i32Sub: 0xb1,
  i32Add: 0xae,
  abs: 0xe0,
  neg: 0xe1,
  sqrt: 0xe3,
  add: 0xe4,
  sub: 0xe5,
  mul: 0xe6,
  div: 0xe7,
  min: 0xe8,
  max: 0xe9,
  pmin: 0xea,
  pmax: 0xeb,
  madd: 0x105, // f32x4.relaxed_madd (relaxed SIMD)
  truncSat: 0xf8,
} as const;

// 1.5·2^23 and its bits: adding it to |v| < 2^22 rounds v to an integer held in the low bits.
const EXP_MAGIC = 12582912, EXP_MAGIC_BITS = 0x4b400000;
const F32 = new Float32Array(1), U8 = new Uint8Array(F32.buffer), I32 = new Int32Array(F32.buffer);

class Code {
  readonly b: number[] = [];
  op(...ops: number[]): this {
    this.b.push(...ops);
    return this;
  }
  get(i: number): this {
    this.b.push(Op.localGet);
    uleb(this.b, i);
    return this;
  }
  set(i: number): this {
    this.b.push(Op.localSet);
    uleb(this.b, i);
    return this;
  }
  tee(i: number): this {
    this.b.push(Op.localTee);
    uleb(this.b, i);
    return this;
  }
  i32(v: number): this {
    this.b.push(Op.i32Const);
    sleb(this.b, v);
    return this;
  }
  simd(op: number, memOffset?: number): this {
    this.b.push(0xfd);
    uleb(this.b, op);
    if (memOffset !== undefined) {
      this.b.push(0); // alignment hint 2^0: every address is accepted
      uleb(this.b, memOffset);
    }
    return this;
  }
  /** An f32 splatted into a v128 constant. */
  splat(v: number): this {
    this.simd(S.const);
    F32[0] = v;
    for (let l = 0; l < 4; l++) this.b.push(U8[0]!, U8[1]!, U8[2]!, U8[3]!);
    return this;
  }
  /** An i32 splatted into a v128 constant (by its bits, as the f32 with those bits). */
  splatBits(bits: number): this {
    I32[0] = bits;
    return this.splat(F32[0]!);
  }
}

// --- lowering ---------------------------------------------------------------------------------

const UNARY_SIMD = new Set([
  "neg",
  "exp",
  "sqrt",
  "rsqrt",
  "tanh",
  "sigmoid",
  "silu",
  "gelu",
  "geluTanh",
  "geluTanhGrad",
  "erf",
  "relu",
  "abs",
  "sign",
  "square",
  "reciprocal",
  "floor",
  "affine",
  "gtScalar",
  "geScalar",
  "ltScalar",
  "leScalar",
  "eqScalar",
  "copy",
]);
const BINARY_SIMD = new Set([
  "add",
  "sub",
  "mul",
  "div",
  "maximum",
  "minimum",
  "eq",
  "ne",
  "lt",
  "le",
  "gt",
  "ge",
]);

/** Whether every node of the DAGs has a vector form. */
export function simdSupports(outputs: readonly Expr[]): boolean {
  const seen = new Set<Expr>();
  const ok = (e: Expr): boolean => {
    if (seen.has(e)) return true;
    seen.add(e);
    if (e.kind === "input" || e.kind === "const") return true;
    if (e.kind === "unary") return UNARY_SIMD.has(e.op) && ok(e.x);
    if (e.kind === "binary") return BINARY_SIMD.has(e.op) && ok(e.a) && ok(e.b);
    return ok(e.c) && ok(e.a) && ok(e.b);
  };
  return outputs.every(ok);
}

// Ops built on exp (a ~20-instruction polynomial and a division or two) and the other ops with
// a division or square root: they weigh more in simdCost.
const EXP_BASED = new Set([
  "exp",
  "tanh",
  "sigmoid",
  "silu",
  "gelu",
  "geluTanh",
  "geluTanhGrad",
  "erf",
]);
const SLOW = new Set(["sqrt", "rsqrt", "reciprocal", "div"]);

/**
 * A DAG's rough cost per element, in units of one cheap vector op (an add, a load): what
 * decides whether a call is worth splitting across threads.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { simdCost } from "./wasm_jit.ts";
 * const x = { kind: "input" as const, index: 0 };
 * const add = simdCost([{ kind: "binary", op: "add", a: x, b: x }]);
 * const gelu = simdCost([{ kind: "unary", op: "gelu", x, p0: 0, p1: 0 }]);
 * assert.ok(gelu > add);
 * ```
 */
export function simdCost(outputs: readonly Expr[]): number {
  const seen = new Set<Expr>();
  let cost = outputs.length; // the stores
  const visit = (e: Expr): void => {
    if (seen.has(e)) return;
    seen.add(e);
    if (e.kind === "input") cost += 1;
    else if (e.kind === "const") return;
    else if (e.kind === "unary") {
      cost += EXP_BASED.has(e.op) ? 16 : SLOW.has(e.op) ? 4 : 1;
      visit(e.x);
    } else if (e.kind === "binary") {
      cost += SLOW.has(e.op) ? 4 : 1;
      visit(e.a);
      visit(e.b);
    } else {
      cost += 2;
      visit(e.c);
      visit(e.a);
      visit(e.b);
    }
  };
  outputs.forEach(visit);
  return cost;
}

/** A compiled kernel and the constants it reads (its key leaves their values out). */
export interface SimdKernel {
  /** `run(inPtrs…, outPtrs…, constPtr, rows, cols)` on byte addresses of the shared memory. */
  readonly run: (...args: number[]) => void;
  /**
   * The module's bytes (a few kB): what another thread compiles to run the same kernel on the
   * same memory (a `WebAssembly.Module` may be built synchronously off the main thread).
   */
  readonly bytes: Uint8Array;
}

/**
 * Structure key and constant list of a DAG under an access pattern (what a compiled kernel is
 * cached by, and the values it is called with).
 */
export function simdKey(
  outputs: readonly Expr[],
  access: readonly SimdAccess[],
): { key: string; consts: number[] } {
  const ids = new Map<Expr, number>();
  const parts: string[] = [access.join(",")];
  const consts: number[] = [];
  const visit = (e: Expr): number => {
    const have = ids.get(e);
    if (have !== undefined) return have;
    let p: string;
    if (e.kind === "input") p = `i${e.index}`;
    else if (e.kind === "const") {
      consts.push(e.value);
      p = "k";
    } else if (e.kind === "unary") {
      const x = visit(e.x);
      consts.push(e.p0, e.p1);
      p = `u${e.op}(${x})`;
    } else if (e.kind === "binary") p = `b${e.op}(${visit(e.a)},${visit(e.b)})`;
    else p = `w(${visit(e.c)},${visit(e.a)},${visit(e.b)})`;
    const id = ids.size;
    ids.set(e, id);
    parts.push(p);
    return id;
  };
  parts.push(`->${outputs.map(visit).join(",")}`);
  return { key: parts.join(";"), consts };
}

/**
 * Compile the DAGs to a module instantiated on `mem`: the function walks rows × cols (cols a
 * multiple of 4 unless rows = 1 and no input is per-row/column; callers pad buffers so a
 * last partial vector reads and writes inside the memory), constants read from `constPtr`
 * in the order {@linkcode simdKey} lists them. With `fma` (the engine has relaxed SIMD), exp's
 * polynomial uses `f32x4.relaxed_madd`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { compileSimd } from "./wasm_jit.ts";
 * const mem = new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true });
 * const x = { kind: "input" as const, index: 0 };
 * const k = compileSimd([{ kind: "binary", op: "mul", a: x, b: x }], ["dense"], 1, mem);
 * const f = new Float32Array(mem.buffer);
 * f.set([1, 2, 3, 4], 16);
 * k.run(64, 128, 256, 1, 4); // in at byte 64, out at 128, constants at 256
 * assert.deepEqual([...f.subarray(32, 36)], [1, 4, 9, 16]);
 * // The same kernel built from its bytes (as a worker does) on the same memory.
 * const again = new WebAssembly.Instance(new WebAssembly.Module(k.bytes as BufferSource), {
 *   env: { mem },
 * }).exports.k as (...a: number[]) => void;
 * again(64, 192, 256, 1, 4);
 * assert.deepEqual([...f.subarray(48, 52)], [1, 4, 9, 16]);
 * ```
 */
export function compileSimd(
  outputs: readonly Expr[],
  access: readonly SimdAccess[],
  nInputs: number,
  mem: WebAssembly.Memory,
  fma = false,
): SimdKernel {
  const nOut = outputs.length;
  // Params: inputs, outputs, constPtr, rows, cols. Then i32 locals r, j, ib (byte offset of
  // element i), jb (byte offset of column j), then v128 locals.
  const P_CONST = nInputs + nOut, P_ROWS = P_CONST + 1, P_COLS = P_CONST + 2;
  const nParams = P_COLS + 1;
  const L_R = nParams, L_J = nParams + 1, L_IB = nParams + 2, L_JB = nParams + 3;
  let nextV = nParams + 4;
  const vLocal = () => nextV++;
  const pre = new Code(), rowHead = new Code(), body = new Code();
  // Input values hoisted out of the loops: scalars once, per-row values each row.
  const inLocal = new Map<number, number>();
  for (let j = 0; j < nInputs; j++) {
    if (access[j] === "scalar") {
      const l = vLocal();
      pre.get(j).simd(S.load32Splat, 0).set(l);
      inLocal.set(j, l);
    } else if (access[j] === "col") {
      const l = vLocal();
      rowHead.get(j).get(L_R).i32(2).op(Op.i32Shl).op(Op.i32Add).simd(S.load32Splat, 0).set(l);
      inLocal.set(j, l);
    }
  }
  // Constants: loaded once before the loops, in simdKey's order.
  let constIndex = 0;
  const constLocal = () => {
    const l = vLocal();
    pre.get(P_CONST).simd(S.load32Splat, 4 * constIndex++).set(l);
    return l;
  };
  const ids = new Map<Expr, number>();
  const tmp = () => vLocal();
  // The loop body's vector constants live in locals set once before the loops: V8 builds a
  // v128.const in the loop every iteration (measured: 7–13 % of exp, sigmoid and GELU kernels).
  const hoisted = new Map<number, number>();
  body.splat = (v: number) => {
    F32[0] = v;
    const key = I32[0]!; // by bits: −0 and 0 are different constants
    let l = hoisted.get(key);
    if (l === undefined) {
      l = vLocal();
      pre.splat(v).set(l);
      hoisted.set(key, l);
    }
    body.get(l);
    return body;
  };
  const one = () => body.splat(1);
  // a·b + c with a and b on the stack and `c` pushing c: one f32x4.relaxed_madd with `fma` (one
  // rounding where the CPU has FMA, two where it has not), a multiply and an add without.
  const mulAdd = (c: () => void) => {
    if (fma) {
      c();
      body.simd(S.madd);
    } else {
      body.simd(S.mul);
      c();
      body.simd(S.add);
    }
  };
  // exp(x) of the vector in local `x`, left on the stack (Cephes expf: n = round(x·log2 e),
  // r = x − n·ln 2 in two parts, e^r by a degree-6 polynomial), scaled by 2^n as 2^h·2^(n−h)
  // with h = ⌊n/2⌋, both normal for n in [−150, 128], so the last multiply rounds into the
  // subnormals or overflows to +∞ exactly where f32 does. The clamp to [−104, 89] is
  // pmin(x, 89) = 89 < x ? 89 : x, then pmax(·, −104) = · < −104 ? −104 : ·, which keep a NaN x
  // (the comparison is false) and are one instruction each on x64, where f32x4.min/max's
  // NaN and ±0 rules cost ~7 (exp over 1.6M elements on one thread: 3.4 → 2.1 ms; GELU-tanh 5.5 → 4.6).
  const expOf = (x: number) => {
    const xc = tmp(), m = tmp(), n = tmp(), r = tmp(), r2 = tmp(), ni = tmp(), h = tmp();
    body.get(x).splat(89).simd(S.pmin).splat(-104).simd(S.pmax).set(xc);
    // n = round(xc·log2 e) by adding and subtracting 1.5·2^23 (ties to even, as f32x4.nearest,
    // for |n| < 2^22): the sum's low mantissa bits are n itself, so n as an integer is an i32
    // subtraction of bit patterns, not i32x4.trunc_sat_f32x4_s (a ~6-instruction sequence in V8).
    body.get(xc).splat(1.44269504088896341);
    mulAdd(() => body.splat(EXP_MAGIC));
    body.set(m);
    body.get(m).splat(EXP_MAGIC).simd(S.sub).set(n);
    // r = xc − n·0.693359375 − n·(−2.12194440e-4): the first product is exact (9 significant
    // bits, |n| ≤ 150), so fused or not the steps round as Cephes' do.
    body.get(n).splat(-0.693359375);
    mulAdd(() => body.get(xc));
    body.set(r).get(n).splat(2.12194440e-4);
    mulAdd(() => body.get(r));
    body.set(r);
    body.get(m).splatBits(EXP_MAGIC_BITS).simd(S.i32Sub).set(ni);
    body.get(ni).i32(1).simd(S.i32ShrS).set(h);
    // 1 + r + r²·P(r), P of degree 5 by Estrin's scheme ((c5 r + c4)·r² + (c3 r + c2))·r² +
    // (c1 r + c0): a chain of 4 dependent multiply-adds where Horner's has 6.
    body.get(r).get(r).simd(S.mul).set(r2);
    body.splat(1.9875691500e-4).get(r);
    mulAdd(() => body.splat(1.3981999507e-3));
    body.get(r2);
    mulAdd(() => {
      body.splat(8.3334519073e-3).get(r);
      mulAdd(() => body.splat(4.1665795894e-2));
    });
    body.get(r2);
    mulAdd(() => {
      body.splat(1.6666665459e-1).get(r);
      mulAdd(() => body.splat(5.0000001201e-1));
    });
    body.get(r2);
    mulAdd(() => body.get(r));
    one().simd(S.add);
    // ·2^h by adding h to the exponent field (exact: e^r·2^h stays normal for h ≥ −75), then
    // ·2^(n−h), whose bits are (n − h)·2^23 + bits(1).
    body.get(h).i32(23).simd(S.i32Shl).simd(S.i32Add);
    body.get(ni).get(h).simd(S.i32Sub).i32(23).simd(S.i32Shl).splat(1).simd(S.i32Add)
      .simd(S.mul);
  };
  // erf(a) for a ≥ 0 in local a (Abramowitz–Stegun 7.1.26, as lib/ir.ts's erfApprox).
  const erfPos = (a: number) => {
    const t = tmp(), e = tmp(), na = tmp();
    body.splat(1).splat(1).get(a).splat(0.3275911).simd(S.mul).simd(S.add).simd(S.div).set(t);
    body.get(a).get(a).simd(S.mul).simd(S.neg).set(na);
    expOf(na);
    body.set(e);
    body.splat(1)
      .splat(1.061405429).get(t).simd(S.mul).splat(-1.453152027).simd(S.add)
      .get(t).simd(S.mul).splat(1.421413741).simd(S.add)
      .get(t).simd(S.mul).splat(-0.284496736).simd(S.add)
      .get(t).simd(S.mul).splat(0.254829592).simd(S.add)
      .get(t).simd(S.mul).get(e).simd(S.mul).simd(S.sub);
  };
  // bitselect(neg(y), y, x < 0) for y on the stack: copy the sign of x.
  const signOf = (x: number) => {
    const y = tmp();
    body.set(y).get(y).simd(S.neg).get(y).get(x).splat(0).simd(S.lt).simd(S.bitselect);
  };
  const sigmoidOf = (x: number) => {
    const e = tmp(), na = tmp(), dn = tmp();
    body.get(x).simd(S.abs).simd(S.neg).set(na);
    expOf(na);
    body.set(e);
    body.splat(1).get(e).simd(S.add).set(dn);
    body.get(e).get(dn).simd(S.div).splat(1).get(dn).simd(S.div).get(x).splat(0).simd(S.lt)
      .simd(S.bitselect);
  };
  // tanh(x) of the vector in local `x`, left on the stack. |x| ≥ 0.625: (1 − e)/(1 + e),
  // e = exp(−2|x|), signed; below, Cephes tanhf's odd polynomial (the quotient would cancel to
  // a few ulp near 0 in f32).
  const tanhOf = (x: number) => {
    const e2 = tmp(), na = tmp(), big = tmp(), z = tmp();
    body.get(x).simd(S.abs).splat(-2).simd(S.mul).set(na);
    expOf(na);
    body.set(e2);
    body.splat(1).get(e2).simd(S.sub).splat(1).get(e2).simd(S.add).simd(S.div);
    signOf(x);
    body.set(big);
    body.get(x).get(x).simd(S.mul).set(z);
    body.splat(-5.70498872745e-3).get(z).simd(S.mul).splat(2.06390887954e-2).simd(S.add)
      .get(z).simd(S.mul).splat(-5.37397155531e-2).simd(S.add)
      .get(z).simd(S.mul).splat(1.33314422036e-1).simd(S.add)
      .get(z).simd(S.mul).splat(-3.33332819422e-1).simd(S.add)
      .get(z).simd(S.mul).get(x).simd(S.mul).get(x).simd(S.add);
    body.get(big).get(x).simd(S.abs).splat(0.625).simd(S.lt).simd(S.bitselect);
  };
  // GELU-tanh or its derivative from s = σ(v) = 1/(1 + e), v = 2u = 2√(2/π)(x + 0.044715·x³),
  // e = exp(−v) = 2^t, left on the stack. A sign split (exp(−|v|), then a select) is not needed:
  // e is exactly +∞ in the negative tail, where s is 0. Cheaper than expOf, as a GELU allows:
  // - t = −v·log2 e = x·(a + b·x²) with log2 e folded into a and b: a square and a multiply-add.
  //   Its rounding (a few ulp of t) costs what v's own already does (e's relative error ~|v|·ulp).
  // - 2^t without a Cody–Waite reduction: f = t − round(t) is exact, 2^f is Cephes exp2f's
  //   degree-6 polynomial (≤ 1.7e-7 relative) by Estrin's scheme.
  // - 2^round(t) as an add to the exponent field, t clamped to [−126, 128]: every e is a normal
  //   number, and at t = 128 (f = 0, 2^f = 1 exactly) the add gives the bits of +∞. m, the
  //   rounding sum t + 1.5·2^23, holds round(t) in its low 9 bits (those of 1.5·2^23 are 0),
  //   so bits(m) << 23 is the addend.
  // Value x/(1 + e): one division, x where e ≤ 2^-126 (1 + e = 1) and x/∞ = −0 from v ≈ −88.7
  // (x ≈ −10.06) on, as the CPU's 1 + tanh u = 0 (results below ~3e-38 in magnitude are −0:
  // far inside the tests' |x|·0.9e-7). Derivative s + w·d, d = 2u' = 2√(2/π)(1 + 3·0.044715·x²),
  // w = s(1 − s)·x with 1 − s = e·s (no cancellation as s → 1) capped at 1 (e·s is ∞·0 = NaN
  // where e is +∞), and e set to 0 where t ≤ −126: w is exactly 0 in both tails (|x| ≳ 10) and
  // d finite (x² capped), so every finite x has a finite derivative, as the CPU's f64.
  // (409,600 elements on one thread, alternating A/B: value 0.90 → 0.35 ms, g·derivative
  // 1.19 → 0.53 ms since the sign-split form on expOf; ~42 → ~22 vector ops in the value.)
  const geluSigmoid = (x: number, deriv: boolean) => {
    const c = 2 * 0.7978845608028654, L = Math.LOG2E;
    const x2 = tmp(), t = tmp(), m = tmp(), f = tmp(), f2 = tmp(), e = tmp(), s = tmp(), d = tmp();
    body.get(x).get(x).simd(S.mul).tee(x2).splat(-c * 0.044715 * L);
    mulAdd(() => body.splat(-c * L));
    body.get(x).simd(S.mul).splat(128).simd(S.pmin).splat(-126).simd(S.pmax).set(t);
    if (deriv) {
      // d off the critical path, with x² capped at 1e30 (∞ beyond |x| ≈ 1.8e19 would meet
      // w = 0 as 0·∞).
      body.splat(1e30).get(x2).simd(S.pmin).splat(3 * 0.044715 * c);
      mulAdd(() => body.splat(c));
      body.set(d);
    }
    body.get(t).splat(EXP_MAGIC).simd(S.add).tee(m).splat(EXP_MAGIC).simd(S.sub).set(f);
    body.get(t).get(f).simd(S.sub).tee(f).get(f).simd(S.mul).set(f2);
    // 1 + f·(((q5 f + q4)·f² + (q3 f + q2))·f² + (q1 f + q0))
    body.splat(1.535336188319500e-4).get(f);
    mulAdd(() => body.splat(1.339887440266574e-3));
    body.get(f2);
    mulAdd(() => {
      body.splat(9.618437357674640e-3).get(f);
      mulAdd(() => body.splat(5.550332471162809e-2));
    });
    body.get(f2);
    mulAdd(() => {
      body.splat(2.402264791363012e-1).get(f);
      mulAdd(() => body.splat(6.931472028550421e-1));
    });
    body.get(f);
    mulAdd(one);
    body.get(m).i32(23).simd(S.i32Shl).simd(S.i32Add);
    if (!deriv) {
      body.set(e).get(x).get(e);
      one().simd(S.add).simd(S.div);
      return;
    }
    body.get(t).splat(-126).simd(S.gt).simd(S.and).tee(e);
    one().simd(S.add).set(s);
    one().get(s).simd(S.div).set(s);
    one().get(e).get(s).simd(S.mul).simd(S.pmin).get(s).get(x).simd(S.mul).simd(S.mul).get(d);
    mulAdd(() => body.get(s));
  };
  const visit = (e: Expr): number => {
    const have = ids.get(e);
    if (have !== undefined) return have;
    let out: number;
    if (e.kind === "input") {
      const h = inLocal.get(e.index);
      if (h !== undefined) out = h;
      else {
        out = vLocal();
        body.get(e.index).get(access[e.index] === "row" ? L_JB : L_IB).op(Op.i32Add)
          .simd(S.load, 0).set(out);
      }
    } else if (e.kind === "const") out = constLocal();
    else if (e.kind === "unary") {
      const x = visit(e.x);
      const p0 = constLocal(), p1 = constLocal();
      out = vLocal();
      const cmp = (op: number) => body.get(x).get(p0).simd(op).op().splat(1).simd(S.and);
      switch (e.op) {
        case "neg":
          body.get(x).simd(S.neg);
          break;
        case "copy":
          body.get(x);
          break;
        case "abs":
          body.get(x).simd(S.abs);
          break;
        case "sqrt":
          body.get(x).simd(S.sqrt);
          break;
        case "rsqrt":
          one().get(x).simd(S.sqrt).simd(S.div);
          break;
        case "square":
          body.get(x).get(x).simd(S.mul);
          break;
        case "reciprocal":
          one().get(x).simd(S.div);
          break;
        case "floor":
          body.get(x).simd(S.floor);
          break;
        case "affine":
          body.get(x).get(p0).simd(S.mul).get(p1).simd(S.add);
          break;
        case "exp":
          expOf(x);
          break;
        case "sigmoid":
          sigmoidOf(x);
          break;
        case "silu":
          sigmoidOf(x);
          body.get(x).simd(S.mul);
          break;
        case "tanh":
          tanhOf(x);
          break;
        case "geluTanh":
          // ½x(1 + tanh u) = x·σ(2u): one exp and one division, where tanh's two branches (exp
          // and quotient, odd polynomial) cost ~25 more vector ops (8.1 → 5.6 ms at 1.6M
          // elements). It also avoids 1 + tanh u cancelling for x < 0.
          geluSigmoid(x, false);
          break;
        case "geluTanhGrad":
          // ½(1 + t) + ½x(1 − t²)·u' = s + 2x·s(1 − s)·u' with s = σ(2u).
          geluSigmoid(x, true);
          break;
        case "erf": {
          const a = tmp();
          body.get(x).simd(S.abs).set(a);
          erfPos(a);
          signOf(x);
          break;
        }
        case "gelu": {
          const z = tmp(), a = tmp();
          body.get(x).splat(Math.SQRT1_2).simd(S.mul).set(z);
          body.get(z).simd(S.abs).set(a);
          erfPos(a);
          signOf(z);
          body.splat(1).simd(S.add).get(x).simd(S.mul).splat(0.5).simd(S.mul);
          break;
        }
        case "relu":
          // NaN passes through, as the CPU backend (x > 0 || isNaN(x)).
          body.get(x).splat(0).get(x).splat(0).simd(S.gt).get(x).get(x).simd(S.ne).simd(S.or)
            .simd(S.bitselect);
          break;
        case "sign":
          body.get(x).splat(0).simd(S.gt).splat(1).simd(S.and)
            .get(x).splat(0).simd(S.lt).splat(1).simd(S.and).simd(S.sub);
          break;
        case "gtScalar":
          cmp(S.gt);
          break;
        case "geScalar":
          cmp(S.ge);
          break;
        case "ltScalar":
          cmp(S.lt);
          break;
        case "leScalar":
          cmp(S.le);
          break;
        case "eqScalar":
          cmp(S.eq);
          break;
        default:
          throw new Error(`no vector form for unary ${e.op}`);
      }
      body.set(out);
    } else if (e.kind === "binary") {
      const a = visit(e.a), b = visit(e.b);
      out = vLocal();
      const arith: Record<string, number> = { add: S.add, sub: S.sub, mul: S.mul, div: S.div };
      const cmps: Record<string, number> = {
        eq: S.eq,
        ne: S.ne,
        lt: S.lt,
        le: S.le,
        gt: S.gt,
        ge: S.ge,
      };
      if (e.op in arith) body.get(a).get(b).simd(arith[e.op]!);
      else if (e.op in cmps) body.get(a).get(b).simd(cmps[e.op]!).splat(1).simd(S.and);
      else if (e.op === "maximum" || e.op === "minimum") {
        // a ≥ b ? a : b (ties keep a), then NaN of b, then NaN of a — the CPU backend's order.
        body.get(a).get(b).get(a).get(b).simd(e.op === "maximum" ? S.ge : S.le).simd(S.bitselect);
        body.set(out).get(b).get(out).get(b).get(b).simd(S.ne).simd(S.bitselect);
        body.set(out).get(a).get(out).get(a).get(a).simd(S.ne).simd(S.bitselect);
      } else throw new Error(`no vector form for binary ${e.op}`);
      body.set(out);
    } else {
      const c = visit(e.c), a = visit(e.a), b = visit(e.b);
      out = vLocal();
      body.get(a).get(b).get(c).splat(0).simd(S.ne).simd(S.bitselect).set(out);
    }
    ids.set(e, out);
    return out;
  };
  const outLocals = outputs.map(visit);
  outLocals.forEach((l, o) =>
    body.get(nInputs + o).get(L_IB).op(Op.i32Add).get(l).simd(S.store, 0)
  );

  // for r < rows { rowHead; for j < cols (step 4) { body; ib += 16 } }
  const f = new Code();
  f.b.push(...pre.b);
  f.op(Op.block, 0x40).op(Op.loop, 0x40);
  f.get(L_R).get(P_ROWS).op(Op.i32GeU).op(Op.brIf, 1);
  f.b.push(...rowHead.b);
  f.i32(0).set(L_J).i32(0).set(L_JB);
  f.op(Op.block, 0x40).op(Op.loop, 0x40);
  f.get(L_J).get(P_COLS).op(Op.i32GeU).op(Op.brIf, 1);
  f.b.push(...body.b);
  f.get(L_IB).i32(16).op(Op.i32Add).set(L_IB);
  f.get(L_JB).i32(16).op(Op.i32Add).set(L_JB);
  f.get(L_J).i32(4).op(Op.i32Add).set(L_J);
  f.op(Op.br, 0).op(Op.end, Op.end);
  f.get(L_R).i32(1).op(Op.i32Add).set(L_R);
  f.op(Op.br, 0).op(Op.end, Op.end);
  return assemble(nParams, 4, nextV - (nParams + 4), f, mem);
}

/**
 * The module of one exported function "k" with `nParams` i32 parameters, then `i32s` i32 and
 * `v128s` v128 locals, and body `f` (without its final `end`), instantiated on `mem` (imported
 * as env.mem: shared, up to 4 GiB).
 */
function assemble(
  nParams: number,
  i32s: number,
  v128s: number,
  f: Code,
  mem: WebAssembly.Memory,
): SimdKernel {
  f.op(Op.end);
  const mod = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  const type: number[] = [1, 0x60];
  uleb(type, nParams);
  for (let i = 0; i < nParams; i++) type.push(0x7f);
  type.push(0);
  section(mod, 1, type);
  const imp: number[] = [1];
  for (const s of ["env", "mem"]) {
    uleb(imp, s.length);
    for (const ch of s) imp.push(ch.charCodeAt(0));
  }
  imp.push(0x02, 0x03); // memory, limits: min and max, shared
  uleb(imp, 1);
  uleb(imp, 65536);
  section(mod, 2, imp);
  section(mod, 3, [1, 0]);
  section(mod, 7, [1, 1, 0x6b, /* "k" */ 0x00, 0]);
  const fn: number[] = [];
  const locals: number[] = [2];
  uleb(locals, i32s);
  locals.push(0x7f);
  uleb(locals, v128s);
  locals.push(0x7b);
  fn.push(...locals, ...f.b);
  const bodyBytes: number[] = [];
  uleb(bodyBytes, fn.length);
  bodyBytes.push(...fn);
  section(mod, 10, [1, ...bodyBytes]);
  const bytes = new Uint8Array(mod);
  const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { mem } });
  return { run: inst.exports.k as (...args: number[]) => void, bytes };
}

/**
 * The backward pass of a gated residual `out = x + g·a` (g [b, d] broadcast over the `tokens`
 * rows of a sample of a [b, tokens, d]) as one kernel: `run(g, a, dy, da, dg, constPtr, rows,
 * cols)` on byte addresses of the shared memory, for `rows` samples of `cols` = d (a multiple of
 * 4) columns, writes da = g·dy and dg[i, :] = Σ_j a[i, j, :]·dy[i, j, :] (constPtr is unused: the
 * signature is {@linkcode compileSimd}'s, so Gemm.runJit splits calls by sample across the
 * threads). One read of a and dy and one write of da, where the unfused ops made two more
 * passes (a·dy written by the multiply, then read by the token sum).
 *
 * Column blocks of 16 floats (one cache line of each row; 4 vectors, then single vectors for
 * the rest of the row) walk the sample's tokens with the block's sums in registers: each dg
 * element is one f32 chain of mul-then-add over the tokens in order, so its bits depend on
 * neither the thread count nor the chunking, and a chunk run twice (runJit's redo) writes the
 * same values. `tokens` (≥ 1) is compiled in.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { compileGatedBackward } from "./wasm_jit.ts";
 * const mem = new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true });
 * const f = new Float32Array(mem.buffer);
 * // One sample, 2 tokens, d = 4: g at float 0, a at 16, dy at 32; da at 64, dg at 96.
 * f.set([1, 2, 3, 4], 0);
 * f.set([1, 1, 1, 1, 2, 2, 2, 2], 16);
 * f.set([1, 2, 3, 4, 5, 6, 7, 8], 32);
 * compileGatedBackward(2, mem).run(0, 64, 128, 256, 384, 0, 1, 4);
 * assert.deepEqual([...f.subarray(64, 72)], [1, 4, 9, 16, 5, 12, 21, 32]); // g·dy
 * assert.deepEqual([...f.subarray(96, 100)], [11, 14, 17, 20]); // 1·dy₀ + 2·dy₁
 * ```
 */
export function compileGatedBackward(tokens: number, mem: WebAssembly.Memory): SimdKernel {
  if (!Number.isInteger(tokens) || tokens < 1) {
    throw new RangeError(`compileGatedBackward: tokens must be an integer >= 1, got ${tokens}`);
  }
  const G = 0, A = 1, DY = 2, DA = 3, DG = 4, ROWS = 6, COLS = 7, nParams = 8;
  const S_ = 8, RB = 9, SB = 10, JB = 11, P = 12;
  const ACC = [13, 14, 15, 16], GV = [17, 18, 19, 20], DYV = 21;
  const f = new Code();
  // Bytes of a row and of a sample.
  f.get(COLS).i32(2).op(Op.i32Shl).tee(RB).i32(tokens).op(Op.i32Mul).set(SB);
  // Column blocks of v vectors while a whole block fits the row.
  const blocks = (v: number) => {
    f.op(Op.block, 0x40).op(Op.loop, 0x40);
    f.get(JB).i32(16 * v).op(Op.i32Add).get(RB).op(Op.i32GtU).op(Op.brIf, 1);
    for (let k = 0; k < v; k++) {
      f.get(G).get(JB).op(Op.i32Add).simd(S.load, 16 * k).set(GV[k]!);
      f.splat(0).set(ACC[k]!);
    }
    f.get(JB).set(P);
    // The tokens (a do-while: tokens ≥ 1), P the block's byte offset in the sample.
    f.op(Op.loop, 0x40);
    for (let k = 0; k < v; k++) {
      f.get(DY).get(P).op(Op.i32Add).simd(S.load, 16 * k).set(DYV);
      f.get(DA).get(P).op(Op.i32Add).get(GV[k]!).get(DYV).simd(S.mul).simd(S.store, 16 * k);
      f.get(ACC[k]!).get(A).get(P).op(Op.i32Add).simd(S.load, 16 * k).get(DYV).simd(S.mul)
        .simd(S.add).set(ACC[k]!);
    }
    f.get(P).get(RB).op(Op.i32Add).tee(P).get(SB).op(Op.i32LtU).op(Op.brIf, 0);
    f.op(Op.end);
    for (let k = 0; k < v; k++) {
      f.get(DG).get(JB).op(Op.i32Add).get(ACC[k]!).simd(S.store, 16 * k);
    }
    f.get(JB).i32(16 * v).op(Op.i32Add).set(JB);
    f.op(Op.br, 0).op(Op.end, Op.end);
  };
  // for s < rows { blocks of 4 vectors, then of 1; next sample }
  f.op(Op.block, 0x40).op(Op.loop, 0x40);
  f.get(S_).get(ROWS).op(Op.i32GeU).op(Op.brIf, 1);
  f.i32(0).set(JB);
  blocks(4);
  blocks(1);
  for (const [p, by] of [[G, RB], [DG, RB], [A, SB], [DY, SB], [DA, SB]] as const) {
    f.get(p).get(by).op(Op.i32Add).set(p);
  }
  f.get(S_).i32(1).op(Op.i32Add).set(S_);
  f.op(Op.br, 0).op(Op.end, Op.end);
  return assemble(nParams, 5, 9, f, mem);
}
