/**
 * @file Reductions (sum, max, min, argmax, argmin) over an arbitrary axis set. The backend
 * collapses the input into kept axes (output order) and reduced axes, each with input
 * strides; two strategies follow: one invocation per output (small reduced extent, or many
 * outputs), or one workgroup per output with a strided loop and a shared-memory tree.
 *
 * Semantics match the CPU backend: max/min propagate NaN (the first NaN wins), ties keep
 * the first index, an empty max/min is NaN and an empty argmax is 0. NaN is tested on the
 * bits, because WGSL lets compilers assume `x != x` is false.
 * @module
 */
import type { ReduceOp } from "../lib/ir.ts";
import { paramsDecl, pw, stridedOffsets, WG } from "./common.ts";

/**
 * Parameter words of a reduce kernel: `[outN, redN, keptShape, keptStr, redShape, redStr]`.
 *
 * @example
 * ```ts
 * import { reduceParamWords } from "./reduce.ts";
 * if (reduceParamWords(1, 2) !== 8) throw new Error("bad");
 * ```
 */
export function reduceParamWords(keptRank: number, redRank: number): number {
  return 2 + 2 * keptRank + 2 * redRank;
}

const NONE = "0xffffffffu";

const HELPERS = `
fn isnan_(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
`;

function isMaxLike(op: ReduceOp): boolean {
  return op === "max" || op === "argmax";
}

// One element `v` with flattened reduced index `j` enters a running (acc, arg) in increasing
// j order: strict comparison so the first of equal values wins (CPU: `better || first`).
function updateStmt(op: ReduceOp, kahan: boolean): string {
  if (op === "sum") {
    // Kahan summation keeps long per-invocation loops near the CPU's f64 sum; it costs up to
    // 3x on lavapipe, so short loops add plainly.
    return kahan
      ? `{ let y = v - comp; let t = acc + y; comp = (t - acc) - y; acc = t; }`
      : "acc = acc + v;";
  }
  const cmp = isMaxLike(op) ? "v > acc" : "v < acc";
  return `if (arg == ${NONE} || ${cmp} || (isnan_(v) && !isnan_(acc))) { acc = v; arg = j; }`;
}

function initStmt(op: ReduceOp): string {
  if (op === "sum") return "var acc: f32 = 0.0; var comp: f32 = 0.0;";
  const inf = isMaxLike(op) ? "0xff800000u" : "0x7f800000u";
  return `var acc: f32 = bitcast<f32>(${inf}); var arg: u32 = ${NONE};`;
}

function resultExpr(op: ReduceOp, acc: string, arg: string): string {
  if (op === "sum") return acc;
  if (op === "argmax" || op === "argmin") return `select(f32(${arg}), 0.0, ${arg} == ${NONE})`;
  return `select(${acc}, bitcast<f32>(0x7fc00000u), ${arg} == ${NONE})`;
}

/**
 * One invocation per output element, looping over the reduced axes with nested loops
 * (`kahan`: compensated sums, for long loops). Bindings: X (read), O, params (see
 * `reduceParamWords`).
 *
 * @example
 * ```ts
 * import { reduceThreadKernel } from "./reduce.ts";
 * if (!reduceThreadKernel("sum", 1, 1).includes("for (var r0")) throw new Error("bad");
 * ```
 */
export function reduceThreadKernel(
  op: ReduceOp,
  keptRank: number,
  redRank: number,
  kahan = false,
): string {
  const kStr = 2 + keptRank, rShape = 2 + 2 * keptRank, rStr = rShape + redRank;
  let loop = "";
  if (redRank === 0) {
    loop = `{ let j = 0u; let v = X[base]; ${updateStmt(op, false)} }`;
  } else {
    const open: string[] = [], close: string[] = [];
    for (let d = 0; d < redRank; d++) {
      const prev = d === 0 ? "base" : `q${d - 1}`;
      open.push(
        `for (var r${d} = 0u; r${d} < ${pw(rShape + d)}; r${d}++) { let q${d} = ${prev} + r${d} * ${
          pw(rStr + d)
        };`,
      );
      close.push("}");
    }
    loop = `var j = 0u;
${open.join("\n")}
  let v = X[q${redRank - 1}];
  ${updateStmt(op, kahan)}
  j++;
${close.join("\n")}`;
  }
  return `${HELPERS}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
${paramsDecl(reduceParamWords(keptRank, redRank), 2)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${WG}u;
  if (i >= ${pw(0)}) { return; }
${stridedOffsets("i", keptRank, 2, [kStr], ["base"], "k")}
${initStmt(op)}
${loop}
  O[i] = ${resultExpr(op, "acc", "arg")};
}`;
}

/** Invocations per workgroup of the workgroup-per-output reduction. */
export const REDUCE_WG = 256;

/**
 * One workgroup per output element: a strided loop over the flattened reduced index, then a
 * shared-memory tree. Ties between partial results are broken by the smaller index, so the
 * result does not depend on how elements were split among invocations.
 *
 * @example
 * ```ts
 * import { reduceGroupKernel } from "./reduce.ts";
 * if (!reduceGroupKernel("argmax", 1, 1).includes("workgroupBarrier")) throw new Error("bad");
 * ```
 */
export function reduceGroupKernel(op: ReduceOp, keptRank: number, redRank: number): string {
  const kStr = 2 + keptRank, rShape = 2 + 2 * keptRank, rStr = rShape + redRank;
  const arg = op !== "sum";
  const combine = op === "sum" ? "{ sv[t] = sv[t] + sv[t + s]; }" : `{
      let a = sv[t]; let b = sv[t + s]; let ai = si[t]; let bi = si[t + s];
      let an = isnan_(a); let bn = isnan_(b);
      var takeB = false;
      if (bi == ${NONE}) { takeB = false; }
      else if (ai == ${NONE}) { takeB = true; }
      else if (bn && !an) { takeB = true; }
      else if (an == bn) {
        if (an) { takeB = bi < ai; }
        else if (${isMaxLike(op) ? "b > a" : "b < a"}) { takeB = true; }
        else if (b == a) { takeB = bi < ai; }
      }
      if (takeB) { sv[t] = b; si[t] = bi; }
    }`;
  return `${HELPERS}
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> O: array<f32>;
${paramsDecl(reduceParamWords(keptRank, redRank), 2)}
var<workgroup> sv: array<f32, ${REDUCE_WG}>;
${arg ? `var<workgroup> si: array<u32, ${REDUCE_WG}>;` : ""}
@compute @workgroup_size(${REDUCE_WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = wid.x + wid.y * nwg.x;
  if (o >= ${pw(0)}) { return; }
  let t = lid.x;
${stridedOffsets("o", keptRank, 2, [kStr], ["base"], "k")}
${initStmt(op)}
  for (var j = t; j < ${pw(1)}; j += ${REDUCE_WG}u) {
${stridedOffsets("j", redRank, rShape, [rStr], ["roff"], "r")}
    let v = X[base + roff];
    ${updateStmt(op, true)}
  }
  sv[t] = acc;
  ${arg ? "si[t] = arg;" : ""}
  for (var s = ${REDUCE_WG / 2}u; s > 0u; s = s >> 1u) {
    workgroupBarrier();
    if (t < s) ${combine}
  }
  if (t == 0u) {
    O[o] = ${resultExpr(op, "sv[0]", arg ? "si[0]" : "0u")};
  }
}`;
}

/**
 * Sum over the leading axis of a contiguous `[R, C]` matrix (the bias gradient of a `[B, C]`
 * activation): one invocation per column, or per four columns with vec4 loads when
 * `C % 4 == 0`, adding rows in increasing order like the CPU loop (`kahan`: compensated).
 * Params as `reduceParamWords(1, 1)`: `[C, R, C, 1, R, C]`. The general per-output kernel
 * (256 invocations a workgroup) ran a 256-column sum as ONE workgroup, i.e. one lavapipe
 * thread; `wg` lets CPU adapters use one SIMD chunk a workgroup so the columns spread over
 * cores.
 *
 * @example
 * ```ts
 * import { reduceColsKernel } from "./reduce.ts";
 * if (!reduceColsKernel(true, false, 8).includes("vec4<f32>")) throw new Error("bad");
 * ```
 */
export function reduceColsKernel(vec4: boolean, kahan: boolean, wg: number): string {
  const ty = vec4 ? "vec4<f32>" : "f32";
  const z = vec4 ? "vec4<f32>(0.0)" : "0.0";
  const cols = vec4 ? `(${pw(0)} / 4u)` : pw(0);
  const add = kahan
    ? "{ let y = v - comp; let t = acc + y; comp = (t - acc) - y; acc = t; }"
    : "acc = acc + v;";
  return `@group(0) @binding(0) var<storage, read> X: array<${ty}>;
@group(0) @binding(1) var<storage, read_write> O: array<${ty}>;
${paramsDecl(reduceParamWords(1, 1), 2)}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = gid.x + gid.y * nwg.x * ${wg}u;
  let cols = ${cols};
  if (j >= cols) { return; }
  var acc: ${ty} = ${z};
  var comp: ${ty} = ${z};
  for (var r = 0u; r < ${pw(1)}; r++) {
    let v = X[r * cols + j];
    ${add}
  }
  O[j] = acc;
}`;
}
