/**
 * @file Shared WGSL building blocks: the parameter uniform (u32 words packed into vec4s,
 * because uniform arrays need a 16-byte element stride), the linear invocation index over a
 * 2-D grid, and strided index decomposition.
 * @module
 */

/** Invocations per workgroup of the 1-D kernels. */
export const WG = 256;

/**
 * WGSL expression reading parameter word `k` as u32.
 *
 * @example
 * ```ts
 * import { pw } from "./common.ts";
 * if (pw(5) !== "P.v[1].y") throw new Error("bad");
 * ```
 */
export function pw(k: number): string {
  return `P.v[${k >> 2}].${"xyzw"[k & 3]}`;
}

/**
 * WGSL expression reading parameter word `k` as f32 (written with `f32Bits`).
 *
 * @example
 * ```ts
 * import { pf } from "./common.ts";
 * if (pf(0) !== "bitcast<f32>(P.v[0].x)") throw new Error("bad");
 * ```
 */
export function pf(k: number): string {
  return `bitcast<f32>(${pw(k)})`;
}

/**
 * Declaration of the parameter uniform `P` holding `words` u32 words at `binding`.
 *
 * @example
 * ```ts
 * import { paramsDecl } from "./common.ts";
 * if (!paramsDecl(6, 2).includes("array<vec4<u32>, 2>")) throw new Error("bad");
 * ```
 */
export function paramsDecl(words: number, binding: number): string {
  const n = Math.max(1, Math.ceil(words / 4));
  return `struct Params { v: array<vec4<u32>, ${n}> }
@group(0) @binding(${binding}) var<uniform> P: Params;`;
}

/**
 * Entry point header of a 1-D kernel: defines `i`, the linear invocation index over a grid
 * that may spill into y (see `grid1d`), and returns when `i >= limit`.
 *
 * @example
 * ```ts
 * import { main1d } from "./common.ts";
 * if (!main1d("P.v[0].x").includes("num_workgroups")) throw new Error("bad");
 * ```
 */
export function main1d(limit: string, wg = WG): string {
  return `@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${wg}u;
  if (i >= ${limit}) { return; }`;
}

/**
 * WGSL statements turning the row-major index `idx` over a `rank`-D shape (parameter words
 * `shapeAt..shapeAt+rank−1`) into one offset per stride set (`strideAt[s]..`), declared as
 * `var <names[s]>: u32` (`tag` keeps temporaries of several calls apart). Strides may be negative (two's complement: u32 arithmetic wraps).
 *
 * @example
 * ```ts
 * import { stridedOffsets } from "./common.ts";
 * const s = stridedOffsets("i", 2, 0, [2, 4], ["oa", "ob"]);
 * if (!s.includes("var oa")) throw new Error("bad");
 * ```
 */
export function stridedOffsets(
  idx: string,
  rank: number,
  shapeAt: number,
  strideAt: readonly number[],
  names: readonly string[],
  tag = "",
): string {
  const lines = names.map((n) => `var ${n}: u32 = 0u;`);
  if (rank === 0) return lines.join("\n");
  const rem = `rem${tag}`;
  lines.push(`var ${rem}: u32 = ${idx};`);
  for (let d = rank - 1; d >= 0; d--) {
    const c = `c${tag}${d}`;
    if (d === 0) lines.push(`let ${c} = ${rem};`);
    else {
      lines.push(`let ${c} = ${rem} % ${pw(shapeAt + d)};`);
      lines.push(`${rem} = ${rem} / ${pw(shapeAt + d)};`);
    }
    names.forEach((n, s) => lines.push(`${n} += ${c} * ${pw(strideAt[s]! + d)};`));
  }
  return lines.join("\n");
}

/**
 * Merge adjacent axes that every stride set traverses contiguously, and drop size-1 axes, so
 * that kernels index with as few divisions as possible. Returns the new shape and strides.
 *
 * @example
 * ```ts
 * import { collapseAxes } from "./common.ts";
 * const r = collapseAxes([2, 3, 4], [[12, 4, 1], [0, 0, 1]]);
 * if (r.shape.join() !== "6,4") throw new Error("bad");
 * ```
 */
export function collapseAxes(
  shape: readonly number[],
  strides: readonly (readonly number[])[],
): { shape: number[]; strides: number[][] } {
  const outShape: number[] = [];
  const outStr: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    const n = shape[d]!;
    if (n === 1) continue;
    const last = outShape.length - 1;
    if (
      last >= 0 &&
      strides.every((s, k) => outStr[k]![last]! === s[d]! * n)
    ) {
      outShape[last]! *= n;
      strides.forEach((s, k) => (outStr[k]![last] = s[d]!));
      continue;
    }
    outShape.push(n);
    strides.forEach((s, k) => outStr[k]!.push(s[d]!));
  }
  return { shape: outShape, strides: outStr };
}
