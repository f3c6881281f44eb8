/**
 * @file Fused scaled-dot-product self-attention over timm's packed projection, forward and
 * backward, batched over batch × heads in one dispatch per pass.
 *
 * Layouts (f32, contiguous): `QKV [B, N, 3, H, d]` (the `qkv` linear's output viewed per head:
 * q, k, v of token n and head h are `d`-vectors at slot 0, 1, 2), `O [B, N, H, d]` (the heads
 * concatenated, what the output projection reads), `L [B, H, N]` the log-sum-exp of each query
 * row's scaled scores. Reading q, k, v in place and writing O in place is what removes the
 * four transposes (copies) of the composite `transpose → matmul → softmax → matmul →
 * transpose`; one kernel also replaces its five softmax dispatches and its two padded batched
 * matmuls (49 × 49 × 32 products run in 64 × 64 blocks).
 *
 * Forward ({@linkcode attentionForwardKernel}): one invocation per block of `R` query rows of
 * one (batch, head), streaming the keys once with an online softmax (running max m, sum l,
 * rescaled accumulator; Milakov & Gimelshein 2018, as FlashAttention). It writes O and L.
 *
 * Backward, FlashAttention-2's recomputation from L instead of a stored probability matrix:
 * with P = exp(S − L) recomputed per (query, key), dP = dO·Vᵀ, D = rowsum(dO ⊙ O),
 * dS = P ⊙ (dP − D):
 * - {@linkcode attentionBackwardQKernel}: per block of query rows, dQ = scale · dS·K (and D,
 *   written for the next pass);
 * - {@linkcode attentionBackwardKVKernel}: per block of key rows, dK = scale · dSᵀ·Q and
 *   dV = Pᵀ·dO.
 * Together they write every element of dQKV once, in QKV's packed layout, so the gradient
 * flows into the `qkv` linear's backward without a copy.
 *
 * Why blocks of rows per invocation: on llvmpipe (lavapipe) every storage load is a loop over
 * the SIMD lanes with a bounds check per component (docs/engine_round2.md), so a loaded key or
 * value row should feed as many FMAs as registers allow — the same reason the `direct` matmul
 * keeps 16 × 16 output blocks. The loops over `d` are unrolled here (named registers, no
 * private arrays, which llvmpipe would index through memory). Exponentials are base 2 with
 * log2(e) folded into the query scale. Scores are finite for finite inputs; a NaN score makes
 * its row's outputs NaN (checked on the bits: lavapipe's `exp2` clamps NaN to a number).
 *
 * Parameters (uniform words): `[B, N, H, blocks, bits(scale)]`, `blocks = ⌈N / R⌉`. The head
 * width `d`, `R` and the workgroup size are compiled in (`d` % 4 = 0 reads vec4s).
 * @module
 */
import { paramsDecl, pf, pw } from "./common.ts";
import { checkInt } from "../lib/_util.ts";

const B = pw(0), N = pw(1), H = pw(2), BLOCKS = pw(3), SCALE = pf(4);

/** Compile-time shape of an attention kernel. */
export interface AttentionKernelShape {
  /** Head width d (≥ 1). */
  d: number;
  /** Rows (queries, or keys for the dK/dV pass) per invocation (1–16). */
  rows: number;
  /** Invocations per workgroup. */
  wg: number;
}

function shapeOf(s: AttentionKernelShape) {
  const d = checkInt("attention head width", s.d, 1);
  const rows = checkInt("attention rows per invocation", s.rows, 1, 16);
  const wg = checkInt("attention workgroup size", s.wg, 1, 1024);
  const w = d % 4 === 0 ? 4 : 1; // components per load
  return { d, rows, wg, w, dw: d / w, ty: w === 4 ? "vec4<f32>" : "f32" };
}

const HEADER = (wg: number) =>
  `const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;
fn isnan_(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${wg}u;
  if (i >= ${B} * ${H} * ${BLOCKS}) { return; }
  let bh = i / ${BLOCKS};
  let r0 = (i - bh * ${BLOCKS}) * `;

// Shared index arithmetic, in units of one load (vec4 or f32): a token's q, k, v are `hs`
// apart and tokens `ts` apart in QKV; a token is `hs` wide in O.
function indexing(dw: number): string {
  return `let bi = bh / ${H};
  let hi = bh - bi * ${H};
  let hs = ${H} * ${dw}u;
  let ts = 3u * hs;
  let qbase = bi * ${N} * ts + hi * ${dw}u;
  let obase = bi * ${N} * hs + hi * ${dw}u;
  let lbase = bh * ${N};`;
}

const range = (n: number) => [...Array(n).keys()];

// Σ_c dot(a_c, b_c) as a balanced sum (shorter dependency chains than a running sum).
function dotSum(a: (c: number) => string, b: (c: number) => string, dw: number, w: number) {
  let terms = range(dw).map((c) => (w === 4 ? `dot(${a(c)}, ${b(c)})` : `${a(c)} * ${b(c)}`));
  while (terms.length > 1) {
    const next: string[] = [];
    for (let t = 0; t < terms.length; t += 2) {
      next.push(t + 1 < terms.length ? `(${terms[t]} + ${terms[t + 1]})` : terms[t]!);
    }
    terms = next;
  }
  return terms[0]!;
}

/**
 * Forward: O = softmax(scale · Q·Kᵀ)·V per (batch, head) and L = the rows' log-sum-exp.
 * Bindings: QKV (read), O, L, params.
 *
 * @example
 * ```ts
 * import { attentionForwardKernel } from "./attention.ts";
 * const code = attentionForwardKernel({ d: 32, rows: 7, wg: 8 });
 * if (!code.includes("exp2")) throw new Error("bad");
 * ```
 */
export function attentionForwardKernel(shape: AttentionKernelShape): string {
  const { rows: R, wg, w, dw, ty } = shapeOf(shape);
  const rs = range(R), cs = range(dw);
  const lines: string[] = [];
  for (const r of rs) {
    lines.push(`let qr${r} = qbase + min(r0 + ${r}u, ${N} - 1u) * ts;`);
    for (const c of cs) lines.push(`let q${r}_${c} = QKV[qr${r} + ${c}u] * sc;`);
    lines.push(`var m${r} = -3.0e38;`, `var l${r} = 0.0;`, `var bad${r} = false;`);
    for (const c of cs) lines.push(`var a${r}_${c} = ${ty}(0.0);`);
  }
  const body: string[] = [`let kb = qbase + j * ts + hs;`];
  for (const c of cs) body.push(`let k${c} = QKV[kb + ${c}u];`);
  for (const c of cs) body.push(`let v${c} = QKV[kb + hs + ${c}u];`);
  for (const r of rs) {
    body.push(
      `{ let s = ${dotSum((c) => `q${r}_${c}`, (c) => `k${c}`, dw, w)};`,
      `  bad${r} = bad${r} || isnan_(s);`,
      `  let mn = max(m${r}, s);`,
      `  let al = exp2(m${r} - mn);`,
      `  let p = exp2(s - mn);`,
      `  l${r} = l${r} * al + p;`,
      ...cs.map((c) => `  a${r}_${c} = a${r}_${c} * al + p * v${c};`),
      `  m${r} = mn; }`,
    );
  }
  const store: string[] = [];
  for (const r of rs) {
    store.push(
      `if (r0 + ${r}u < ${N}) {`,
      `  let inv = select(1.0 / l${r}, bitcast<f32>(0x7fc00000u), bad${r});`,
      `  let orow = obase + (r0 + ${r}u) * hs;`,
      ...cs.map((c) => `  O[orow + ${c}u] = a${r}_${c} * inv;`),
      `  L[lbase + r0 + ${r}u] = select((m${r} + log2(l${r})) * LN2, bitcast<f32>(0x7fc00000u), bad${r});`,
      `}`,
    );
  }
  return `@group(0) @binding(0) var<storage, read> QKV: array<${ty}>;
@group(0) @binding(1) var<storage, read_write> O: array<${ty}>;
@group(0) @binding(2) var<storage, read_write> L: array<f32>;
${paramsDecl(5, 3)}
${HEADER(wg)}${R}u;
  ${indexing(dw)}
  let sc = ${SCALE} * LOG2E;
  ${lines.join("\n  ")}
  for (var j = 0u; j < ${N}; j++) {
    ${body.join("\n    ")}
  }
  ${store.join("\n  ")}
}`;
}

/**
 * Backward, query pass: dQ = scale · Σ_j P_ij (dP_ij − D_i) k_j into the q slots of dQKV, and
 * D_i = dO_i · O_i into `Dv [B, H, N]` for {@linkcode attentionBackwardKVKernel}.
 * Bindings: QKV, O, L, dO (read), dQKV, Dv, params.
 *
 * @example
 * ```ts
 * import { attentionBackwardQKernel } from "./attention.ts";
 * if (!attentionBackwardQKernel({ d: 6, rows: 2, wg: 8 }).includes("Dv[")) throw new Error("bad");
 * ```
 */
export function attentionBackwardQKernel(shape: AttentionKernelShape): string {
  const { rows: R, wg, w, dw, ty } = shapeOf(shape);
  const rs = range(R), cs = range(dw);
  const lines: string[] = [];
  for (const r of rs) {
    lines.push(
      `let row${r} = min(r0 + ${r}u, ${N} - 1u);`,
      `let qr${r} = qbase + row${r} * ts;`,
      `let or${r} = obase + row${r} * hs;`,
    );
    for (const c of cs) {
      lines.push(
        `let q${r}_${c} = QKV[qr${r} + ${c}u] * sc;`,
        `let g${r}_${c} = G[or${r} + ${c}u];`,
      );
    }
    for (const c of cs) lines.push(`let o${r}_${c} = O[or${r} + ${c}u];`);
    lines.push(
      `let D${r} = ${dotSum((c) => `g${r}_${c}`, (c) => `o${r}_${c}`, dw, w)};`,
      `let L${r} = L[lbase + row${r}] * LOG2E;`,
    );
    for (const c of cs) lines.push(`var dq${r}_${c} = ${ty}(0.0);`);
  }
  const body: string[] = [`let kb = qbase + j * ts + hs;`];
  for (const c of cs) body.push(`let k${c} = QKV[kb + ${c}u];`);
  for (const c of cs) body.push(`let v${c} = QKV[kb + hs + ${c}u];`);
  for (const r of rs) {
    body.push(
      `{ let p = exp2(${dotSum((c) => `q${r}_${c}`, (c) => `k${c}`, dw, w)} - L${r});`,
      `  let ds = p * (${dotSum((c) => `g${r}_${c}`, (c) => `v${c}`, dw, w)} - D${r});`,
      ...cs.map((c) => `  dq${r}_${c} = dq${r}_${c} + ds * k${c};`),
      `}`,
    );
  }
  const store: string[] = [];
  for (const r of rs) {
    store.push(
      `if (r0 + ${r}u < ${N}) {`,
      ...cs.map((c) => `  dQKV[qr${r} + ${c}u] = dq${r}_${c} * ${SCALE};`),
      `  Dv[lbase + row${r}] = D${r};`,
      `}`,
    );
  }
  return `@group(0) @binding(0) var<storage, read> QKV: array<${ty}>;
@group(0) @binding(1) var<storage, read> O: array<${ty}>;
@group(0) @binding(2) var<storage, read> L: array<f32>;
@group(0) @binding(3) var<storage, read> G: array<${ty}>;
@group(0) @binding(4) var<storage, read_write> dQKV: array<${ty}>;
@group(0) @binding(5) var<storage, read_write> Dv: array<f32>;
${paramsDecl(5, 6)}
${HEADER(wg)}${R}u;
  ${indexing(dw)}
  let sc = ${SCALE} * LOG2E;
  ${lines.join("\n  ")}
  for (var j = 0u; j < ${N}; j++) {
    ${body.join("\n    ")}
  }
  ${store.join("\n  ")}
}`;
}

/**
 * Backward, key pass: per key j, dK_j = scale · Σ_i P_ij (dP_ij − D_i) q_i and
 * dV_j = Σ_i P_ij dO_i into the k and v slots of dQKV (D from the query pass).
 * Bindings: QKV, L, dO, Dv (read), dQKV, params.
 *
 * @example
 * ```ts
 * import { attentionBackwardKVKernel } from "./attention.ts";
 * if (!attentionBackwardKVKernel({ d: 32, rows: 4, wg: 8 }).includes("dQKV[")) throw new Error("bad");
 * ```
 */
export function attentionBackwardKVKernel(shape: AttentionKernelShape): string {
  const { rows: R, wg, w, dw, ty } = shapeOf(shape);
  const rs = range(R), cs = range(dw);
  const lines: string[] = [];
  for (const r of rs) {
    lines.push(`let kr${r} = qbase + min(r0 + ${r}u, ${N} - 1u) * ts + hs;`);
    for (const c of cs) {
      lines.push(
        `let k${r}_${c} = QKV[kr${r} + ${c}u];`,
        `let v${r}_${c} = QKV[kr${r} + hs + ${c}u];`,
      );
    }
    for (const c of cs) {
      lines.push(`var dk${r}_${c} = ${ty}(0.0);`, `var dv${r}_${c} = ${ty}(0.0);`);
    }
  }
  const body: string[] = [`let qb = qbase + i2 * ts;`, `let ob = obase + i2 * hs;`];
  for (const c of cs) body.push(`let q${c} = QKV[qb + ${c}u] * sc;`);
  for (const c of cs) body.push(`let g${c} = G[ob + ${c}u];`);
  body.push(`let Li = L[lbase + i2] * LOG2E;`, `let Di = Dv[lbase + i2];`);
  for (const r of rs) {
    body.push(
      `{ let p = exp2(${dotSum((c) => `q${c}`, (c) => `k${r}_${c}`, dw, w)} - Li);`,
      `  let ds = p * (${dotSum((c) => `g${c}`, (c) => `v${r}_${c}`, dw, w)} - Di);`,
      ...cs.map((c) => `  dv${r}_${c} = dv${r}_${c} + p * g${c};`),
      ...cs.map((c) => `  dk${r}_${c} = dk${r}_${c} + ds * q${c};`),
      `}`,
    );
  }
  const store: string[] = [];
  for (const r of rs) {
    store.push(
      `if (r0 + ${r}u < ${N}) {`,
      // q was scaled by scale · log2(e); dK needs scale once: multiply by ln 2.
      ...cs.map((c) => `  dQKV[kr${r} + ${c}u] = dk${r}_${c} * LN2;`),
      ...cs.map((c) => `  dQKV[kr${r} + hs + ${c}u] = dv${r}_${c};`),
      `}`,
    );
  }
  return `@group(0) @binding(0) var<storage, read> QKV: array<${ty}>;
@group(0) @binding(1) var<storage, read> L: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<${ty}>;
@group(0) @binding(3) var<storage, read> Dv: array<f32>;
@group(0) @binding(4) var<storage, read_write> dQKV: array<${ty}>;
${paramsDecl(5, 5)}
${HEADER(wg)}${R}u;
  ${indexing(dw)}
  let sc = ${SCALE} * LOG2E;
  ${lines.join("\n  ")}
  for (var i2 = 0u; i2 < ${N}; i2++) {
    ${body.join("\n    ")}
  }
  ${store.join("\n  ")}
}`;
}

/**
 * Rows per invocation for `n` rows: the count in `[lo, hi]` that wastes the fewest padded rows
 * (the larger on ties, fewer loads per FMA). 49 tokens → 7 (no padding).
 *
 * @example
 * ```ts
 * import { attentionRows } from "./attention.ts";
 * if (attentionRows(49, 4, 8) !== 7 || attentionRows(64, 4, 8) !== 8) throw new Error("bad");
 * ```
 */
export function attentionRows(n: number, lo: number, hi: number): number {
  let best = hi, waste = Infinity;
  for (let r = hi; r >= lo; r--) {
    const w = Math.ceil(n / r) * r - n;
    if (w < waste) [best, waste] = [r, w];
  }
  return Math.min(best, Math.max(1, n));
}
