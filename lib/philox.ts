/**
 * @file Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
 * SC'11): the counter-based generator both backends draw from, as a TypeScript function and
 * as WGSL written word for word alike, plus the definition of each stream element. Pure (no
 * GPU, no Tensor), so kernels and backends import it from below.
 * @module
 */
import type { Dyn } from "./capture.ts";

/** Kinds of random stream. `bits` returns raw 32-bit words reinterpreted as float bits. */
export type RandomKind = "uniform" | "normal" | "bits";

/** Philox state: a 64-bit key as two words and a 64-bit block counter as two words. */
export interface RandomState {
  /** The 64-bit key as two 32-bit words. */
  key: readonly [number, number];
  /** The 64-bit block counter as two 32-bit words (low, high). */
  counter: readonly [number, number];
  /**
   * The counter recomputed when a traced step is replayed (lib/capture.ts), for a generator
   * whose draws a trace repeats.
   */
  dynamicCounter?: Dyn;
}

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
 * import { strict as assert } from "node:assert";
 * import { philox4x32 } from "./philox.ts";
 * // Random123 known-answer test (kat_vectors, philox4x32_10): counter 0, key 0.
 * assert.deepEqual([...philox4x32([0, 0, 0, 0], [0, 0])], [
 *   0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8,
 * ]);
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

/**
 * WGSL Philox 4x32-10, word for word the same as `philox4x32`: `philox_(ctr, key)`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { WGSL_PHILOX } from "./philox.ts";
 * assert.ok(WGSL_PHILOX.includes("fn philox_("));
 * ```
 */
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

/**
 * Map a 32-bit word to a uniform float in [0, 1): top 24 bits, exact in f32 on both backends.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { u32ToUniform } from "./philox.ts";
 * assert.equal(u32ToUniform(0), 0);
 * assert.equal(u32ToUniform(0x80000000), 0.5); // the top 24 bits, scaled by 2^-24
 * assert.equal(u32ToUniform(0xffffffff), 1 - 2 ** -24);
 * ```
 */
export function u32ToUniform(w: number): number {
  return (w >>> 8) * (1 / 16777216);
}

/**
 * The random value of element `i` of a stream, the CPU definition the WGSL kernel follows:
 * uniform/bits use word `i % 4` of block `i / 4`; normal uses Box–Muller on the pair
 * (words 0,1 for even `i`, words 2,3 for odd `i`) of block `i / 2`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randomElement } from "./philox.ts";
 * // Element 3 of the uniform stream is word 3 of block 0: 0x9b00dbd8 (Random123's known
 * // answer for counter 0, key 0), top 24 bits over 2^24.
 * const u = randomElement("uniform", 3, { key: [0, 0], counter: [0, 0] });
 * assert.equal(u, (0x9b00dbd8 >>> 8) / 2 ** 24);
 * ```
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

/**
 * Number of Philox blocks a stream of `size` elements of `kind` consumes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randomBlocks } from "./philox.ts";
 * // A block gives four uniforms or two normals (Box–Muller on a pair of words).
 * assert.equal(randomBlocks("normal", 5), 3);
 * assert.equal(randomBlocks("uniform", 5), 2);
 * ```
 */
export function randomBlocks(kind: RandomKind, size: number): number {
  return kind === "normal" ? Math.ceil(size / 2) : Math.ceil(size / 4);
}

// The high word of a 32x32-bit product without allocating or splitting into 16-bit halves:
// `mt` is the multiplier times 2^-32 (exact, a power-of-two scaling), `b` the other factor and
// `lo` the exact low word (Math.imul). mt·b is the product over 2^32 within 2^-22 (one rounding
// of a value below 2^64); adding 0.5 and subtracting lo·2^-32 (exact) leaves hi + 0.5 within
// 2^-19, so truncation gives hi exactly. Fewer operations than the halves, and floating-point
// ones, which run beside the integer XORs.
const TWO_M32 = 2 ** -32;
const PHILOX_MT0 = PHILOX_M0 * TWO_M32;
const PHILOX_MT1 = PHILOX_M1 * TWO_M32;

function hi32(mt: number, b: number, lo: number): number {
  return (mt * (b >>> 0) + 0.5 - (lo >>> 0) * TWO_M32) >>> 0;
}

/**
 * Philox 4x32-10 of the four consecutive blocks whose 64-bit counters are (lo, hi) + 0..3, the
 * low word carrying into the high one as in `randomElement`, into `w` (block j at words 4j..4j+3).
 * The same rounds as `philox4x32`, four blocks interleaved: one block's rounds are a chain of
 * dependent multiplies, and four independent chains keep the CPU busy while each waits.
 */
function philox4x32x4(lo: number, hi: number, k0: number, k1: number, w: Uint32Array): void {
  let a0 = lo | 0, a1 = hi | 0, a2 = 0, a3 = 0;
  let b0 = (lo + 1) | 0, b1 = (hi + (lo + 1 > 0xffffffff ? 1 : 0)) | 0, b2 = 0, b3 = 0;
  let c0 = (lo + 2) | 0, c1 = (hi + (lo + 2 > 0xffffffff ? 1 : 0)) | 0, c2 = 0, c3 = 0;
  let d0 = (lo + 3) | 0, d1 = (hi + (lo + 3 > 0xffffffff ? 1 : 0)) | 0, d2 = 0, d3 = 0;
  for (let r = 0; r < 10; r++) {
    const la0 = Math.imul(PHILOX_M0, a0), la2 = Math.imul(PHILOX_M1, a2);
    const lb0 = Math.imul(PHILOX_M0, b0), lb2 = Math.imul(PHILOX_M1, b2);
    const lc0 = Math.imul(PHILOX_M0, c0), lc2 = Math.imul(PHILOX_M1, c2);
    const ld0 = Math.imul(PHILOX_M0, d0), ld2 = Math.imul(PHILOX_M1, d2);
    const ha0 = hi32(PHILOX_MT0, a0, la0), ha2 = hi32(PHILOX_MT1, a2, la2);
    const hb0 = hi32(PHILOX_MT0, b0, lb0), hb2 = hi32(PHILOX_MT1, b2, lb2);
    const hc0 = hi32(PHILOX_MT0, c0, lc0), hc2 = hi32(PHILOX_MT1, c2, lc2);
    const hd0 = hi32(PHILOX_MT0, d0, ld0), hd2 = hi32(PHILOX_MT1, d2, ld2);
    a0 = ha2 ^ a1 ^ k0, a1 = la2, a2 = ha0 ^ a3 ^ k1, a3 = la0;
    b0 = hb2 ^ b1 ^ k0, b1 = lb2, b2 = hb0 ^ b3 ^ k1, b3 = lb0;
    c0 = hc2 ^ c1 ^ k0, c1 = lc2, c2 = hc0 ^ c3 ^ k1, c3 = lc0;
    d0 = hd2 ^ d1 ^ k0, d1 = ld2, d2 = hd0 ^ d3 ^ k1, d3 = ld0;
    k0 = (k0 + PHILOX_W0) | 0;
    k1 = (k1 + PHILOX_W1) | 0;
  }
  w[0] = a0, w[1] = a1, w[2] = a2, w[3] = a3;
  w[4] = b0, w[5] = b1, w[6] = b2, w[7] = b3;
  w[8] = c0, w[9] = c1, w[10] = c2, w[11] = c3;
  w[12] = d0, w[13] = d1, w[14] = d2, w[15] = d3;
}

// The words of four blocks, reused by every `randomStream` call (it never re-enters itself).
const STREAM_WORDS = new Uint32Array(16);

/**
 * A whole stream of `size` elements of `kind` from `st`, element `i` as `randomElement`
 * defines it, bit for bit: the CPU backend's `random` (the `wasm` backend's kernel,
 * kernels/wasm_random.ts, gives the same bits). Computed four blocks at a
 * time without allocating (a tail's unused blocks are computed and dropped), since a training
 * step draws tens of thousands of normals through it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randomElement, randomStream } from "./philox.ts";
 * const st = { key: [1, 2], counter: [0xfffffffe, 0] } as const; // carries into counter[1]
 * for (const kind of ["uniform", "normal", "bits"] as const) {
 *   const u = randomStream(kind, 13, st);
 *   assert.equal(u.length, 13);
 *   for (let i = 0; i < 13; i++) assert.ok(Object.is(u[i], randomElement(kind, i, st)));
 * }
 * ```
 */
export function randomStream(kind: RandomKind, size: number, st: RandomState): Float32Array {
  const o = new Float32Array(size);
  const u = new Uint32Array(o.buffer);
  const w = STREAM_WORDS;
  const k0 = st.key[0], k1 = st.key[1], lo = st.counter[0], hi = st.counter[1];
  // Elements per four blocks: a normal takes a pair of words, a uniform or bits one word.
  const step = kind === "normal" ? 8 : 16;
  for (let i0 = 0, b = 0; i0 < size; i0 += step, b += 4) {
    const lo0 = lo + b;
    philox4x32x4(lo0 >>> 0, (hi + (lo0 > 0xffffffff ? 1 : 0)) >>> 0, k0, k1, w);
    const n = Math.min(step, size - i0);
    if (kind === "normal") {
      // Element i0 + h is block b + h/2, words 2(h % 2) and 2(h % 2) + 1: words 2h and 2h + 1.
      for (let h = 0; h < n; h++) {
        // u1 in (0, 1] so the log is finite.
        const u1 = ((w[2 * h]! >>> 8) + 1) * (1 / 16777216);
        const u2 = u32ToUniform(w[2 * h + 1]!);
        o[i0 + h] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
      }
    } else if (kind === "bits") {
      for (let h = 0; h < n; h++) u[i0 + h] = w[h]!;
    } else {
      for (let h = 0; h < n; h++) o[i0 + h] = u32ToUniform(w[h]!);
    }
  }
  return o;
}
