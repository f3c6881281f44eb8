/**
 * @file Philox 4x32-10 random streams as WebAssembly SIMD modules (the `wasm` backend's
 * `random`), assembled here byte by byte like lib/backend/wasm_jit.ts's kernels: four counter
 * blocks a vector (lane j = block j), each 32×32 → 64-bit product's high words from
 * `i64x2.extmul_{low,high}_i32x4_u` and one shuffle, the low words from `i32x4.mul`.
 *
 * Every element is `randomStream`'s (lib/philox.ts), bit for bit. `bits` and `uniform` are exact
 * integer work. A normal is Box–Muller as philox.ts writes it, in f64 (two lanes):
 * `sqrt(−2·log u1) · cos(fl(2π·u2))`, log by fdlibm's e_log.c and cos by fdlibm's reduction (two
 * Cody–Waite steps, 118 bits of π/2) and FreeBSD's k_cos.c / k_sin.c, then rounded to f32. Those
 * are not the engine's `Math.log` / `Math.cos`, so the f64 product may differ from JavaScript's in
 * its last bits: over every one of the 2^24 values each factor can take (bench/random_factors.ts),
 * sqrt(−2·log u1) differs from V8's in 3.6 % of them and cos in 3.1 %, each by one ulp (2^-52
 * relative at most). The f32 rounding hides that except where the product lies that close to a
 * boundary between two f32 roundings: each normal is rounded at v·(1 − ε) and v·(1 + ε)
 * (ε = {@linkcode RANDOM_EPS}, 2^-44, 256 times the factors' largest difference), and where the
 * two f32s differ the kernel writes NaN and appends the index to a list, for the caller to
 * recompute in JavaScript (`randomElement`): 1.35e-6 of them (1,419 in 2^30 normals), 0.07 of
 * a DiT step's 50,176. (An f32 Box–Muller would cost less but be a few ulp off: the CPU and
 * `wasm` backends have drawn the same noise so far, so a run or a test moved from one to the
 * other sees the same draws.)
 *
 * Speed (one thread, 50,176 normals): ~0.82 ms against randomStream's ~2.6; Philox is ~0.22 of
 * it, log and cos ~0.3 each.
 *
 * The function `k(out, idx, cp, one, n)` writes elements [s, s + n) of the stream at byte `out`
 * (whole groups of 8 normals or 16 uniforms: up to 15 floats past n), where s = idx / 4 is a
 * multiple of 4 (the `wasm` backend's chunked calls pass `idx` as a pointer advancing 16 bytes
 * every 4 elements), `one` is ignored, and `cp` is the i32 block [key0, key1, counterLo,
 * counterHi, flagged, capacity, indices…] ({@linkcode RANDOM_CONST_WORDS} words and the list).
 * @module
 */
import type { RandomKind } from "../lib/philox.ts";
import { section, sleb, uleb } from "./wasm_encode.ts";

// lib/philox.ts's constants (it keeps them private; the tests compare the streams bit for bit).
const M0 = 0xd2511f53, M1 = 0xcd9e8d57, W0 = 0x9e3779b9, W1 = 0xbb67ae85;

/**
 * The relative margin around a normal's f64 value inside which its f32 rounding is checked:
 * 2^-44, against a difference from JavaScript's product of at most ~2^-51 (two factors each
 * within 2^-52 of V8's, and one rounding).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { RANDOM_EPS } from "./wasm_random.ts";
 * assert.equal(RANDOM_EPS, 2 ** -44);
 * ```
 */
export const RANDOM_EPS = 2 ** -44;

/**
 * Words of the constant block before the list of flagged indices: key (2), counter (2), the
 * number of flagged normals (an atomic counter, may pass the capacity), the list's capacity.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { RANDOM_CONST_WORDS } from "./wasm_random.ts";
 * assert.equal(RANDOM_CONST_WORDS, 6);
 * ```
 */
export const RANDOM_CONST_WORDS = 6;

/**
 * Elements one iteration of a kind's loop writes (4 blocks): how far past `n` it may write.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randomGroup } from "./wasm_random.ts";
 * assert.equal(randomGroup("normal"), 8);
 * assert.equal(randomGroup("bits"), 16);
 * ```
 */
export function randomGroup(kind: RandomKind): number {
  return kind === "normal" ? 8 : 16;
}

/**
 * A kind's rough cost per element in the units of lib/backend/wasm_jit.ts's `simdCost` (one
 * cheap vector op, ~0.2 ns): what decides whether a call is split across threads, and the size
 * of its chunks (powers of two, so a chunk is whole groups). Measured on one thread, 50,176
 * elements: normals ~16 ns an element, uniforms ~2.4.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randomCost } from "./wasm_random.ts";
 * assert.ok(randomCost("normal") > randomCost("uniform"));
 * ```
 */
export function randomCost(kind: RandomKind): number {
  return kind === "normal" ? 128 : 16;
}

// Core opcodes.
const BLOCK = 0x02, LOOP = 0x03, IF = 0x04, END = 0x0b, BR = 0x0c, BR_IF = 0x0d, CALL = 0x10;
const LGET = 0x20, LSET = 0x21, LTEE = 0x22, I32_LOAD = 0x28, I32_STORE = 0x36, I32C = 0x41;
const I32_GE_U = 0x4f, I32_LT_U = 0x49, I32_ADD = 0x6a, I32_MUL = 0x6c, I32_AND = 0x71;
const I32_SHL = 0x74, I32_SHR_U = 0x76;
// SIMD opcodes (prefix 0xfd).
const V = {
  load: 0x00,
  store: 0x0b,
  const: 0x0c,
  shuffle: 0x0d,
  i32Splat: 0x11,
  f32Ne: 0x42,
  f64Eq: 0x47,
  and: 0x4e,
  or: 0x50,
  xor: 0x51,
  bitselect: 0x52,
  demote: 0x5e, // f32x4.demote_f64x2_zero
  f64Nearest: 0x94,
  i32LtU: 0x3a,
  i32Bitmask: 0xa4,
  i32ShrU: 0xad,
  i32Add: 0xae,
  i32Sub: 0xb1,
  i32Mul: 0xb5,
  i64ShrU: 0xcd,
  i64Add: 0xce,
  i64Sub: 0xd1,
  i64GtS: 0xd9,
  i64FromI32Low: 0xc7, // i64x2.extend_low_i32x4_s
  extmulLowU: 0xde, // i64x2.extmul_low_i32x4_u
  extmulHighU: 0xdf,
  f32Mul: 0xe6,
  f64Sqrt: 0xef,
  f64Add: 0xf0,
  f64Sub: 0xf1,
  f64Mul: 0xf2,
  f64Div: 0xf3,
  f32FromI32: 0xfa, // f32x4.convert_i32x4_s
  f64FromU32: 0xff, // f64x2.convert_low_i32x4_u
} as const;

const CONST = new DataView(new ArrayBuffer(16));

class Code {
  readonly b: number[] = [];
  op(...ops: number[]): this {
    this.b.push(...ops);
    return this;
  }
  get(i: number): this {
    this.b.push(LGET);
    uleb(this.b, i);
    return this;
  }
  set(i: number): this {
    this.b.push(LSET);
    uleb(this.b, i);
    return this;
  }
  tee(i: number): this {
    this.b.push(LTEE);
    uleb(this.b, i);
    return this;
  }
  i32(v: number): this {
    this.b.push(I32C);
    sleb(this.b, v | 0);
    return this;
  }
  /** A memory access: alignment 2^align, offset. */
  mem(op: number, align: number, offset: number): this {
    this.b.push(op, align);
    uleb(this.b, offset);
    return this;
  }
  v(op: number): this {
    this.b.push(0xfd);
    uleb(this.b, op);
    return this;
  }
  /** v128.store at the address on the stack plus `offset`. */
  store(offset: number): this {
    this.v(V.store);
    this.b.push(0);
    uleb(this.b, offset);
    return this;
  }
  bytes16(): this {
    this.v(V.const);
    for (let i = 0; i < 16; i++) this.b.push(CONST.getUint8(i));
    return this;
  }
  f64x2(x: number): this {
    CONST.setFloat64(0, x, true);
    CONST.setFloat64(8, x, true);
    return this.bytes16();
  }
  i64x2(x: bigint): this {
    CONST.setBigUint64(0, x, true);
    CONST.setBigUint64(8, x, true);
    return this.bytes16();
  }
  i32x4(a: number, b: number, c: number, d: number): this {
    [a, b, c, d].forEach((x, i) => CONST.setUint32(4 * i, x >>> 0, true));
    return this.bytes16();
  }
  /** i8x16.shuffle of the two vectors on the stack by 32-bit lanes (0–3 first, 4–7 second). */
  lanes32(...l: number[]): this {
    this.v(V.shuffle);
    for (const x of l) this.b.push(4 * x, 4 * x + 1, 4 * x + 2, 4 * x + 3);
    return this;
  }
}

// fdlibm e_log.c.
const LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
const LG = [
  6.666666666666735130e-01,
  3.999999999940941908e-01,
  2.857142874366239149e-01,
  2.222219843214978396e-01,
  1.818357216161805012e-01,
  1.531383769920937332e-01,
  1.479819860511658591e-01,
];
// fdlibm e_rem_pio2.c: 2/π, and π/2 as pio2_1 (33 bits) + pio2_2 (33 bits) + pio2_2t.
const INVPIO2 = 6.36619772367581382433e-01;
const PIO2_1 = 1.57079632673412561417e+00;
const PIO2_2 = 6.07710050630396597660e-11, PIO2_2T = 2.02226624879595063154e-21;
// FreeBSD k_sin.c and k_cos.c.
const S = [
  -1.66666666666666324348e-01,
  8.33333333332248946124e-03,
  -1.98412698298579493134e-04,
  2.75573137070700676789e-06,
  -2.50507602534068634195e-08,
  1.58969099521155010221e-10,
];
const C = [
  4.16666666666666019037e-02,
  -1.38888888888741095749e-03,
  2.48015872894767294178e-05,
  -2.75573143513906633035e-07,
  2.08757232129817482790e-09,
  -1.13596475577881948265e-11,
];
// 2π as JavaScript's `2 * Math.PI` (exact doubling), and 2^-24.
const TWO_PI = 2 * Math.PI, U24 = 2 ** -24;

/**
 * The module of a kind's stream (see the file comment): imports `env.mem` (shared, as the
 * `wasm` backend's memory), exports `k`. The `normal` module uses `i32.atomic.rmw.add` for its
 * list of flagged indices.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randomModule } from "./wasm_random.ts";
 * import { randomStream } from "../lib/philox.ts";
 * const mem = new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true });
 * const k = new WebAssembly.Instance(new WebAssembly.Module(randomModule("uniform") as BufferSource), {
 *   env: { mem },
 * }).exports.k as (...a: number[]) => void;
 * new Int32Array(mem.buffer).set([7, 0, 0xfffffffe | 0, 0], 0); // key 7, counter 2^32 − 2
 * k(64, 0, 0, 1, 10); // elements 0..9 at byte 64
 * const got = new Float32Array(mem.buffer, 64, 10);
 * assert.deepEqual([...got], [...randomStream("uniform", 10, { key: [7, 0], counter: [0xfffffffe, 0] })]);
 * ```
 */
export function randomModule(kind: RandomKind): Uint8Array {
  const normal = kind === "normal";
  // Params: out, idx, cp, one, n. Then i32 locals, then v128 locals.
  const P_OUT = 0, P_IDX = 1, P_CP = 2, P_N = 4, NP = 5;
  const L_E = NP, L_BLK = NP + 1, L_K0 = NP + 2, L_K1 = NP + 3, L_BM = NP + 4, NI = 5;
  let nextV = NP + NI;
  const vl = () => nextV++;
  const c0 = vl(), c1 = vl(), c2 = vl(), c3 = vl(), t0 = vl(), t1 = vl(), x = vl();
  const m0 = vl(), m1 = vl(), lo = vl(), hi = vl(), lanes = vl();
  const f = new Code();
  // Setup: keys and counter from the constant block; the first block of this call.
  f.get(P_CP).mem(I32_LOAD, 2, 0).set(L_K0);
  f.get(P_CP).mem(I32_LOAD, 2, 4).set(L_K1);
  f.get(P_CP).mem(I32_LOAD, 2, 8).v(V.i32Splat).set(lo);
  f.get(P_CP).mem(I32_LOAD, 2, 12).v(V.i32Splat).set(hi);
  f.i32x4(M0, M0, M0, M0).set(m0).i32x4(M1, M1, M1, M1).set(m1).i32x4(0, 1, 2, 3).set(lanes);
  // Element s = idx / 4: block s / 2 (normal) or s / 4.
  f.get(P_IDX).i32(normal ? 3 : 4).op(I32_SHR_U).set(L_BLK);
  f.i32(0).set(L_E);
  f.op(BLOCK, 0x40, LOOP, 0x40);
  f.get(L_E).get(P_N).op(I32_GE_U, BR_IF, 1);
  // Counters (lo + b, hi + carry) of blocks blk .. blk + 3; the carry where the low word wrapped.
  f.get(L_BLK).v(V.i32Splat).get(lanes).v(V.i32Add).get(lo).v(V.i32Add).tee(c0);
  f.get(hi).get(c0).get(lo).v(V.i32LtU).v(V.i32Sub).set(c1);
  f.i32x4(0, 0, 0, 0).tee(c2).set(c3);
  for (let r = 0; r < 10; r++) {
    // hi(M0·c0), hi(M1·c2): the odd 32-bit lanes of the two 64-bit products of each half.
    f.get(c0).get(m0).v(V.extmulLowU).get(c0).get(m0).v(V.extmulHighU).lanes32(1, 3, 5, 7).set(
      t0,
    );
    f.get(c2).get(m1).v(V.extmulLowU).get(c2).get(m1).v(V.extmulHighU).lanes32(1, 3, 5, 7).set(
      t1,
    );
    // c0' = hi1 ^ c1 ^ k0, c1' = lo1, c2' = hi0 ^ c3 ^ k1, c3' = lo0.
    f.get(t1).get(c1).v(V.xor).get(L_K0).i32(Math.imul(r, W0)).op(I32_ADD).v(V.i32Splat).v(V.xor)
      .set(x);
    f.get(c2).get(m1).v(V.i32Mul).set(c1);
    f.get(t0).get(c3).v(V.xor).get(L_K1).i32(Math.imul(r, W1)).op(I32_ADD).v(V.i32Splat).v(V.xor)
      .set(c2);
    f.get(c0).get(m0).v(V.i32Mul).set(c3);
    f.get(x).set(c0);
  }
  if (normal) emitNormals(f, { c0, c1, c2, c3, vl, P_OUT, P_IDX, P_CP, L_E, L_BM });
  else {
    // Block j's words are lane j of c0..c3: transpose, so element 4j + w is word w of block j.
    const [a, b, c, d] = [vl(), vl(), vl(), vl()];
    f.get(c0).get(c1).lanes32(0, 4, 1, 5).set(a); // b0w0 b0w1 b1w0 b1w1
    f.get(c2).get(c3).lanes32(0, 4, 1, 5).set(b); // b0w2 b0w3 b1w2 b1w3
    f.get(c0).get(c1).lanes32(2, 6, 3, 7).set(c);
    f.get(c2).get(c3).lanes32(2, 6, 3, 7).set(d);
    const rows: [number, number, number[]][] = [
      [a, b, [0, 1, 4, 5]],
      [a, b, [2, 3, 6, 7]],
      [c, d, [0, 1, 4, 5]],
      [c, d, [2, 3, 6, 7]],
    ];
    rows.forEach(([p, q, l], j) => {
      f.get(P_OUT).get(p).get(q).lanes32(...l);
      // u32ToUniform: the top 24 bits (exact in f32) times 2^-24.
      if (kind === "uniform") {
        f.i32(8).v(V.i32ShrU).v(V.f32FromI32);
        CONST.setFloat32(0, U24, true);
        const u = CONST.getUint32(0, true);
        f.i32x4(u, u, u, u).v(V.f32Mul);
      }
      f.store(16 * j);
    });
  }
  const group = randomGroup(kind);
  f.get(P_OUT).i32(4 * group).op(I32_ADD).set(P_OUT);
  f.get(L_E).i32(group).op(I32_ADD).set(L_E);
  f.get(L_BLK).i32(4).op(I32_ADD).set(L_BLK);
  f.op(BR, 0, END, END, END);

  // flag(cp, e0, bm, stride): append e0 (bit 0 of bm) and e0 + stride (bit 1) to cp's list.
  const g = new Code();
  for (let l = 0; l < 2; l++) {
    g.get(2).i32(1 << l).op(I32_AND, IF, 0x40);
    // i = atomic cp[4]++; if i < cp[5]: cp[6 + i] = e0 + l·stride.
    g.get(0).i32(1).op(0xfe, 0x1e, 2, 16).set(4); // i32.atomic.rmw.add, align 4, offset 16
    g.get(4).get(0).mem(I32_LOAD, 2, 20).op(I32_LT_U, IF, 0x40);
    g.get(0).get(4).i32(2).op(I32_SHL, I32_ADD).get(1).get(3).i32(l).op(I32_MUL, I32_ADD);
    g.mem(I32_STORE, 2, 4 * RANDOM_CONST_WORDS);
    g.op(END, END);
  }
  g.op(END);

  // One i32 local (4) in flag: the list index.
  return assemble([
    { params: 5, i32s: NI, v128s: nextV - NP - NI, body: f.b },
    { params: 4, i32s: 1, v128s: 0, body: g.b },
  ]);
}

/**
 * A module importing `env.mem` (shared) whose functions take i32 parameters only and return
 * nothing; the first is exported as `k`.
 */
function assemble(fns: { params: number; i32s: number; v128s: number; body: number[] }[]) {
  const mod = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  const types: number[] = [fns.length];
  for (const { params } of fns) types.push(0x60, params, ...new Array(params).fill(0x7f), 0);
  section(mod, 1, types);
  const imp: number[] = [1];
  for (const s of ["env", "mem"]) {
    uleb(imp, s.length);
    for (const ch of s) imp.push(ch.charCodeAt(0));
  }
  imp.push(0x02, 0x03); // memory, limits: min and max, shared
  uleb(imp, 1);
  uleb(imp, 65536);
  section(mod, 2, imp);
  section(mod, 3, [fns.length, ...fns.map((_, i) => i)]);
  section(mod, 7, [1, 1, 0x6b, /* "k" */ 0x00, 0]);
  const code: number[] = [fns.length];
  for (const { i32s, v128s, body } of fns) {
    const fb: number[] = [2];
    uleb(fb, i32s);
    fb.push(0x7f);
    uleb(fb, v128s);
    fb.push(0x7b, ...body);
    uleb(code, fb.length);
    code.push(...fb);
  }
  section(mod, 10, code);
  return new Uint8Array(mod);
}

/**
 * The normals' two factors, for checking them against JavaScript's: `k(a, b, out, n)` reads n
 * (even) words at `a` (u1's) and at `b` (u2's) and writes, per pair of elements j, at out + 48j
 * the f64 pairs sqrt(−2·log u1), cos(fl(2π·u2)) and their product, as the `normal` module
 * computes them (bench/random_factors.ts runs every one of the 2^24 values of each).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randomFactorsModule } from "./wasm_random.ts";
 * const mem = new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true });
 * const k = new WebAssembly.Instance(new WebAssembly.Module(randomFactorsModule() as BufferSource), {
 *   env: { mem },
 * }).exports.k as (...a: number[]) => void;
 * // u1 = 1 (top 24 bits all ones, plus one) and u2 = 0: sqrt(−2·log 1) = −0, cos 0 = 1.
 * new Uint32Array(mem.buffer).set([0xffffff00, 0xffffff00, 0, 0], 0);
 * k(0, 8, 64, 2);
 * assert.deepEqual([...new Float64Array(mem.buffer, 64, 6)], [-0, -0, 1, 1, -0, -0]);
 * ```
 */
export function randomFactorsModule(): Uint8Array {
  const P_A = 0, P_B = 1, P_OUT = 2, P_N = 3, NP = 4, L_J = 4;
  let nextV = NP + 1;
  const vl = () => nextV++;
  const u1 = vl(), u2 = vl(), out = vl();
  const t = {} as Temps;
  for (const name of TEMP_NAMES) t[name] = vl();
  const f = new Code();
  f.i32(0).set(L_J).op(BLOCK, 0x40, LOOP, 0x40);
  f.get(L_J).get(P_N).op(I32_GE_U, BR_IF, 1);
  f.get(P_A).v(V.load).op(4, 0).i32(8).v(V.i32ShrU).i32x4(1, 1, 1, 1).v(V.i32Add);
  f.v(V.f64FromU32).f64x2(U24).v(V.f64Mul).set(u1);
  f.get(P_B).v(V.load).op(4, 0).i32(8).v(V.i32ShrU);
  f.v(V.f64FromU32).f64x2(U24).v(V.f64Mul).set(u2);
  for (const _ of boxMuller(f, u1, u2, out, t));
  f.get(P_OUT).get(t.rb).store(0).get(P_OUT).get(t.lg).store(16).get(P_OUT).get(out).store(32);
  for (const [p, d] of [[P_A, 8], [P_B, 8], [P_OUT, 48], [L_J, 2]]) {
    f.get(p!).i32(d!).op(I32_ADD).set(p!);
  }
  f.op(BR, 0, END, END, END);
  return assemble([{ params: NP, i32s: 1, v128s: nextV - NP - 1, body: f.b }]);
}

interface NormalRegs {
  c0: number;
  c1: number;
  c2: number;
  c3: number;
  vl: () => number;
  P_OUT: number;
  P_IDX: number;
  P_CP: number;
  L_E: number;
  L_BM: number;
}

/**
 * The 8 normals of four blocks: element 2j from words (0, 1) of block j (lane j of c0, c1),
 * element 2j + 1 from words (2, 3) (c2, c3); two f64 lanes at a time.
 */
function emitNormals(f: Code, r: NormalRegs): void {
  const { vl } = r;
  // Integer parts of u1 (top 24 bits + 1: in (0, 1] so the log is finite) and u2 (top 24 bits).
  const a1 = vl(), a2 = vl(), b1 = vl(), b2 = vl();
  f.get(r.c0).i32(8).v(V.i32ShrU).i32x4(1, 1, 1, 1).v(V.i32Add).set(a1);
  f.get(r.c1).i32(8).v(V.i32ShrU).set(a2);
  f.get(r.c2).i32(8).v(V.i32ShrU).i32x4(1, 1, 1, 1).v(V.i32Add).set(b1);
  f.get(r.c3).i32(8).v(V.i32ShrU).set(b2);
  const mk = vl();
  const d = [vl(), vl(), vl(), vl()]; // demoted: (low, even), (low, odd), (high, even), (high, odd)
  const temps = (): Temps => {
    const t = {} as Temps;
    for (const name of TEMP_NAMES) t[name] = vl();
    return t;
  };
  // The four pairs' computations, INTERLEAVE at a time statement by statement.
  const pairs = [0, 1, 2, 3].map((q) => {
    const h = q >> 1, p = q & 1;
    const u1 = vl(), u2 = vl(), out = vl();
    const [wa, wb] = p === 0 ? [a1, a2] : [b1, b2];
    return { h, p, u1, u2, out, wa, wb, t: temps() };
  });
  for (let q0 = 0; q0 < 4; q0 += INTERLEAVE) {
    const gens = pairs.slice(q0, q0 + INTERLEAVE).map(({ h, u1, u2, out, wa, wb, t }) => {
      // Lanes 2h, 2h + 1 of the words as f64, times 2^-24 (exact).
      for (const [src, dst] of [[wa, u1], [wb, u2]] as const) {
        f.get(src);
        if (h === 1) f.get(src).lanes32(2, 3, 2, 3);
        f.v(V.f64FromU32).f64x2(U24).v(V.f64Mul).set(dst);
      }
      return boxMuller(f, u1, u2, out, t);
    });
    for (let live = gens.length; live > 0;) {
      live = 0;
      for (const g of gens) if (!g.next().done) live++;
    }
  }
  for (const { h, p, out } of pairs) {
    // Elements base + 4h + p and + 2: their f32 roundings at v(1 ∓ ε) must agree.
    f.get(out).f64x2(1 - RANDOM_EPS).v(V.f64Mul).v(V.demote);
    f.get(out).f64x2(1 + RANDOM_EPS).v(V.f64Mul).v(V.demote);
    f.v(V.f32Ne).tee(mk).v(V.i32Bitmask).tee(r.L_BM).op(IF, 0x40);
    f.get(r.P_CP).get(r.P_IDX).i32(2).op(I32_SHR_U).get(r.L_E).op(I32_ADD);
    f.i32(4 * h + p).op(I32_ADD).get(r.L_BM).i32(2).op(CALL, 1);
    // Those written NaN (never a normal's value), so an element the caller did not fix shows.
    f.f64x2(NaN).get(out).get(mk).v(V.i64FromI32Low).v(V.bitselect).set(out);
    f.op(END);
    f.get(out).v(V.demote).set(d[2 * h + p]!);
  }
  // [e, e+2] and [e+1, e+3] → [e, e+1, e+2, e+3].
  f.get(r.P_OUT).get(d[0]!).get(d[1]!).lanes32(0, 4, 1, 5).store(0);
  f.get(r.P_OUT).get(d[2]!).get(d[3]!).lanes32(0, 4, 1, 5).store(16);
}

const TEMP_NAMES = [
  "bits",
  "m",
  "i",
  "fv",
  "s",
  "z",
  "w",
  "R",
  "hfsq",
  "dk",
  "cond",
  "lg",
  "rb",
  "x",
  "n",
  "rr",
  "t",
  "ww",
  "y0",
  "y1",
  "kc",
  "ks",
  "v",
] as const;
type Temps = Record<(typeof TEMP_NAMES)[number], number>;
// Pairs of normals computed interleaved, statement by statement: one pair is a chain of
// dependent f64 operations (a division and a square root among them), and four chains side by
// side ran 50,176 normals in 0.82 ms against 0.97 one after another (0.89 two by two).
const INTERLEAVE = 4;

/** out = sqrt(−2·log u1) · cos(fl(2π·u2)) in f64x2 (see the file comment). */
function* boxMuller(f: Code, u1: number, u2: number, out: number, t: Temps): Generator<void> {
  const mul = () => f.v(V.f64Mul), add = () => f.v(V.f64Add), sub = () => f.v(V.f64Sub);
  const k = (x: number) => f.f64x2(x);
  // log(u1), fdlibm: u1 = 2^k·(1 + f) with 1 + f in [√2/2, √2).
  f.get(u1).i64x2(0x000fffffffffffffn).v(V.and).set(t.m);
  yield;
  f.get(t.m).i64x2(0x00095f6400000000n).v(V.i64Add).i64x2(0x0010000000000000n).v(V.and).set(t.i);
  yield;
  f.get(t.m).get(t.i).i64x2(0x3ff0000000000000n).v(V.xor).v(V.or);
  k(1);
  sub();
  f.set(t.fv);
  yield;
  // dk = k as f64: (biased exponent + i's bit) | 2^52's bits is 2^52 + that, exactly.
  f.get(u1).i32(52).v(V.i64ShrU).get(t.i).i32(52).v(V.i64ShrU).v(V.i64Add);
  f.i64x2(0x4330000000000000n).v(V.or);
  k(2 ** 52 + 1023);
  sub();
  f.set(t.dk);
  yield;
  // fdlibm's choice of formula: hx (the high mantissa bits) in (0x6147a, 0x6b851).
  f.get(t.m).i32(32).v(V.i64ShrU).tee(t.bits).i64x2(0x6147an).v(V.i64Sub);
  f.i64x2(0x6b851n).get(t.bits).v(V.i64Sub).v(V.or).i64x2(0n).v(V.i64GtS).set(t.cond);
  yield;
  // s = f/(2+f), z = s², w = z², R = t2 + t1.
  f.get(t.fv).get(t.fv);
  k(2);
  add();
  f.v(V.f64Div).tee(t.s).get(t.s);
  mul();
  f.tee(t.z).get(t.z);
  mul();
  f.set(t.w);
  yield;
  // t2 = z·(Lg1 + w·(Lg3 + w·(Lg5 + w·Lg7)))
  f.get(t.z);
  k(LG[0]!);
  f.get(t.w);
  k(LG[2]!);
  f.get(t.w);
  k(LG[4]!);
  f.get(t.w);
  k(LG[6]!);
  mul(), add(), mul(), add(), mul(), add(), mul();
  // t1 = w·(Lg2 + w·(Lg4 + w·Lg6))
  f.get(t.w);
  k(LG[1]!);
  f.get(t.w);
  k(LG[3]!);
  f.get(t.w);
  k(LG[5]!);
  mul(), add(), mul(), add(), mul();
  add();
  f.set(t.R);
  yield;
  // hfsq = 0.5·f·f
  k(0.5);
  f.get(t.fv);
  mul();
  f.get(t.fv);
  mul();
  f.set(t.hfsq);
  yield;
  // A: dk·ln2_hi − ((hfsq − (s·(hfsq + R) + dk·ln2_lo)) − f)
  f.get(t.dk);
  k(LN2_HI);
  mul();
  f.get(t.hfsq).get(t.s).get(t.hfsq).get(t.R);
  add(), mul();
  f.get(t.dk);
  k(LN2_LO);
  mul(), add(), sub();
  f.get(t.fv);
  sub(), sub();
  // B: dk·ln2_hi − ((s·(f − R) − dk·ln2_lo) − f)
  f.get(t.dk);
  k(LN2_HI);
  mul();
  f.get(t.s).get(t.fv).get(t.R);
  sub(), mul();
  f.get(t.dk);
  k(LN2_LO);
  mul(), sub();
  f.get(t.fv);
  sub(), sub();
  f.get(t.cond).v(V.bitselect);
  // rb = sqrt(−2·log u1)
  k(-2);
  mul();
  f.v(V.f64Sqrt).set(t.rb);
  yield;

  // x = fl(2π·u2); n = nearest(x·2/π); (y0, y1) = x − n·π/2 (fdlibm's second step always).
  f.get(u2);
  k(TWO_PI);
  mul();
  f.tee(t.x);
  k(INVPIO2);
  mul();
  f.v(V.f64Nearest).set(t.n);
  yield;
  f.get(t.x).get(t.n);
  k(PIO2_1);
  mul(), sub();
  f.set(t.t); // r, exact
  yield;
  f.get(t.n);
  k(PIO2_2);
  mul();
  f.set(t.w);
  yield;
  f.get(t.t).get(t.w);
  sub();
  f.set(t.rr); // r = t − w
  yield;
  // w = n·pio2_2t − ((t − r) − w)
  f.get(t.n);
  k(PIO2_2T);
  mul();
  f.get(t.t).get(t.rr);
  sub();
  f.get(t.w);
  sub(), sub();
  f.set(t.w);
  yield;
  f.get(t.rr).get(t.w);
  sub();
  f.set(t.y0);
  yield;
  f.get(t.rr).get(t.y0);
  sub();
  f.get(t.w);
  sub();
  f.set(t.y1);
  yield;
  // z = y0², and kcos: w = z², r = z(C1 + z(C2 + zC3)) + w²(C4 + z(C5 + zC6)),
  // hz = z/2, ww = 1 − hz, ww + (((1 − ww) − hz) + (z·r − y0·y1)).
  f.get(t.y0).get(t.y0);
  mul();
  f.tee(t.z).get(t.z);
  mul();
  f.set(t.s); // w
  yield;
  f.get(t.z);
  k(C[0]!);
  f.get(t.z);
  k(C[1]!);
  f.get(t.z);
  k(C[2]!);
  mul(), add(), mul(), add(), mul();
  f.get(t.s).get(t.s);
  mul();
  k(C[3]!);
  f.get(t.z);
  k(C[4]!);
  f.get(t.z);
  k(C[5]!);
  mul(), add(), mul(), add(), mul(), add();
  f.set(t.R); // r
  yield;
  k(0.5);
  f.get(t.z);
  mul();
  f.set(t.hfsq); // hz
  yield;
  k(1);
  f.get(t.hfsq);
  sub();
  f.tee(t.ww);
  k(1);
  f.get(t.ww);
  sub();
  f.get(t.hfsq);
  sub();
  f.get(t.z).get(t.R);
  mul();
  f.get(t.y0).get(t.y1);
  mul(), sub(), add(), add();
  f.set(t.kc);
  yield;
  // ksin: v = z·y0, r = S2 + z(S3 + z(S4 + z(S5 + zS6))), y0 − ((z(y1/2 − v·r) − y1) − v·S1).
  f.get(t.z).get(t.y0);
  mul();
  f.set(t.v);
  yield;
  k(S[1]!);
  f.get(t.z);
  k(S[2]!);
  f.get(t.z);
  k(S[3]!);
  f.get(t.z);
  k(S[4]!);
  f.get(t.z);
  k(S[5]!);
  mul(), add(), mul(), add(), mul(), add(), mul(), add();
  f.set(t.R);
  yield;
  f.get(t.y0).get(t.z);
  k(0.5);
  f.get(t.y1);
  mul();
  f.get(t.v).get(t.R);
  mul(), sub(), mul();
  f.get(t.y1);
  sub();
  f.get(t.v);
  k(S[0]!);
  mul(), sub(), sub();
  f.set(t.ks);
  yield;
  // cos x by quadrant n (0..4): cos, −sin, −cos, sin, cos.
  f.get(t.ks).get(t.kc);
  f.get(t.n);
  k(1);
  f.v(V.f64Eq).get(t.n);
  k(3);
  f.v(V.f64Eq).v(V.or).v(V.bitselect);
  f.get(t.n);
  k(1);
  f.v(V.f64Eq).get(t.n);
  k(2);
  f.v(V.f64Eq).v(V.or).i64x2(0x8000000000000000n).v(V.and).v(V.xor);
  f.set(t.lg);
  yield;
  f.get(t.lg).get(t.rb);
  mul();
  f.set(out);
  yield;
}
