/**
 * @file Fused LayerNorm (no affine, biased variance) + DiT's AdaLN modulation, forward and
 * backward, for `X [B, T, D]` with per-sample `SH`, `SC [B, D]` (shift and scale) broadcast
 * over the T tokens. Rows (i, j) are normalised over D: μ, σ² = the mean and biased variance,
 * r = 1/√(σ² + eps), x̂ = (x − μ)·r, and `Y = x̂·(1 + SC[i]) + SH[i]`; `ST [B·T, 2]` keeps
 * (μ, r) per row for the backward.
 *
 * - {@linkcode lnModForwardKernel}: one invocation per row (mean, then the centred squares —
 *   two passes, so no cancellation in σ² — then Y). Writes Y and ST.
 * - {@linkcode lnModBackwardRowsKernel}: one invocation per row, with g = dY·(1 + SC[i]):
 *   dX = r·(g − mean(g) − x̂·mean(g·x̂)) (x̂ recomputed from X and ST).
 * - {@linkcode lnModBackwardColsKernel}: one invocation per (sample, column): the token sums
 *   dSH[i] = Σ_j dY and dSC[i] = Σ_j dY·x̂, so no two invocations write the same float (no
 *   atomics, no second reduction pass).
 *
 * Why an invocation per row rather than a workgroup with a shared-memory tree: on llvmpipe
 * barriers are costly and rows are short (D = 128 in the DiT bench), as for kernels/lse.ts's
 * per-row kernels. With `vec4` (D % 4 = 0) every load is a vec4. D is a parameter, so one
 * pipeline serves every width of a kind.
 *
 * Parameters (uniform words): forward `[rows, T, D/w, D, bits(eps)]`, rows pass
 * `[rows, T, D/w, D]`, column pass `[B·D/w, T, D/w]` (w = 4 with `vec4`, else 1).
 * @module
 */
import { main1d, paramsDecl, pf, pw } from "./common.ts";

const ROWS = pw(0), T = pw(1), DW = pw(2), D = pw(3);

const ty = (vec4: boolean) => (vec4 ? "vec4<f32>" : "f32");
// The horizontal sum of an accumulator.
const hsum = (vec4: boolean, v: string) => (vec4 ? `dot(${v}, vec4<f32>(1.0))` : v);

function bindings(vec4: boolean, reads: string[], writes: [string, string][], words: number) {
  const decl = [
    ...reads.map((n, i) =>
      `@group(0) @binding(${i}) var<storage, read> ${n}: array<${n === "ST" ? "f32" : ty(vec4)}>;`
    ),
    ...writes.map(([n, t], i) =>
      `@group(0) @binding(${reads.length + i}) var<storage, read_write> ${n}: array<${t}>;`
    ),
  ];
  return `${decl.join("\n")}\n${paramsDecl(words, reads.length + writes.length)}`;
}

/**
 * Forward: Y and ST from X, SH, SC. Bindings: X, SH, SC (read), Y, ST, params.
 *
 * @example
 * ```ts
 * import { lnModForwardKernel } from "./layernorm.ts";
 * if (!lnModForwardKernel(true, 8).includes("vec4<f32>")) throw new Error("bad");
 * ```
 */
export function lnModForwardKernel(vec4: boolean, wg: number): string {
  const T_ = ty(vec4);
  return `${bindings(vec4, ["X", "SH", "SC"], [["Y", T_], ["ST", "f32"]], 5)}
${main1d(ROWS, wg)}
  let o = i * ${DW};
  let p = (i / ${T}) * ${DW};
  let inv_d = 1.0 / f32(${D});
  var s = ${T_}(0.0);
  for (var c = 0u; c < ${DW}; c++) { s += X[o + c]; }
  let mu = ${hsum(vec4, "s")} * inv_d;
  var v = ${T_}(0.0);
  for (var c = 0u; c < ${DW}; c++) { let e = X[o + c] - mu; v += e * e; }
  let r = 1.0 / sqrt(${hsum(vec4, "v")} * inv_d + ${pf(4)});
  for (var c = 0u; c < ${DW}; c++) {
    Y[o + c] = (X[o + c] - mu) * r * (1.0 + SC[p + c]) + SH[p + c];
  }
  ST[2u * i] = mu;
  ST[2u * i + 1u] = r;
}`;
}

/**
 * Backward, per row: dX from X, SC, ST and dY. Bindings: X, SC, ST, DY (read), DX, params.
 *
 * @example
 * ```ts
 * import { lnModBackwardRowsKernel } from "./layernorm.ts";
 * if (!lnModBackwardRowsKernel(false, 64).includes("DX[")) throw new Error("bad");
 * ```
 */
export function lnModBackwardRowsKernel(vec4: boolean, wg: number): string {
  const T_ = ty(vec4);
  return `${bindings(vec4, ["X", "SC", "ST", "DY"], [["DX", T_]], 4)}
${main1d(ROWS, wg)}
  let o = i * ${DW};
  let p = (i / ${T}) * ${DW};
  let mu = ST[2u * i];
  let r = ST[2u * i + 1u];
  var a = ${T_}(0.0);
  var b = ${T_}(0.0);
  for (var c = 0u; c < ${DW}; c++) {
    let xh = (X[o + c] - mu) * r;
    let g = DY[o + c] * (1.0 + SC[p + c]);
    a += g;
    b += g * xh;
  }
  let inv_d = 1.0 / f32(${D});
  let am = ${hsum(vec4, "a")} * inv_d;
  let bm = ${hsum(vec4, "b")} * inv_d;
  for (var c = 0u; c < ${DW}; c++) {
    let xh = (X[o + c] - mu) * r;
    DX[o + c] = r * (DY[o + c] * (1.0 + SC[p + c]) - am - xh * bm);
  }
}`;
}

/**
 * Backward, per (sample, column): dSH and dSC as sums over the tokens. Bindings: X, ST, DY
 * (read), DSH, DSC, params.
 *
 * @example
 * ```ts
 * import { lnModBackwardColsKernel } from "./layernorm.ts";
 * if (!lnModBackwardColsKernel(true, 8).includes("DSC[")) throw new Error("bad");
 * ```
 */
export function lnModBackwardColsKernel(vec4: boolean, wg: number): string {
  const T_ = ty(vec4);
  return `${bindings(vec4, ["X", "ST", "DY"], [["DSH", T_], ["DSC", T_]], 3)}
${main1d(ROWS, wg)}
  let bi = i / ${DW};
  let c = i - bi * ${DW};
  var s1 = ${T_}(0.0);
  var s2 = ${T_}(0.0);
  for (var j = 0u; j < ${T}; j++) {
    let row = bi * ${T} + j;
    let o = row * ${DW} + c;
    let dy = DY[o];
    s1 += dy;
    s2 += dy * ((X[o] - ST[2u * row]) * ST[2u * row + 1u]);
  }
  DSH[i] = s1;
  DSC[i] = s2;
}`;
}
