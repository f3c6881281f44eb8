/**
 * @file Gather and scatter-add along one axis of a tensor viewed as [outer, dim, inner].
 * Both are deterministic: one invocation per output element. Indices are f32 integers; an
 * index that is out of range or not an integer reads as NaN in `gather` and contributes
 * nothing in `scatterAdd` (a kernel cannot throw, and must never touch memory out of
 * bounds), where the CPU backend throws a RangeError.
 * @module
 */
import { main1d, paramsDecl, pw } from "./common.ts";

/**
 * `O[a, j, c] = X[a, I[j], c]`, moving u32 words so any bit pattern survives. Bindings:
 * X (read), I (read), O, params `[outN, n, dim, inner]`.
 *
 * @example
 * ```ts
 * import { gatherKernel } from "./gather.ts";
 * if (!gatherKernel().includes("0x7fc00000u")) throw new Error("bad");
 * ```
 */
export function gatherKernel(): string {
  return `@group(0) @binding(0) var<storage, read> X: array<u32>;
@group(0) @binding(1) var<storage, read> I: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<u32>;
${paramsDecl(4, 3)}
${main1d(pw(0))}
  let inner = ${pw(3)};
  let c = i % inner;
  let q = i / inner;
  let j = q % ${pw(1)};
  let a = q / ${pw(1)};
  let dim = ${pw(2)};
  let r = I[j];
  if (r >= 0.0 && r < f32(dim) && floor(r) == r) {
    O[i] = X[(a * dim + u32(r)) * inner + c];
  } else {
    O[i] = 0x7fc00000u;
  }
}`;
}

/**
 * `O[a, r, c] = Σ_{j: I[j] = r} S[a, j, c]`, summed in increasing j (the CPU's order, so
 * results are bit-identical). Bindings: S (read), I (read), O, params
 * `[outN, n, dimSize, inner]`.
 *
 * @example
 * ```ts
 * import { scatterAddKernel } from "./gather.ts";
 * if (!scatterAddKernel().includes("for (var j")) throw new Error("bad");
 * ```
 */
export function scatterAddKernel(): string {
  return `@group(0) @binding(0) var<storage, read> S: array<f32>;
@group(0) @binding(1) var<storage, read> I: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
${paramsDecl(4, 3)}
${main1d(pw(0))}
  let inner = ${pw(3)};
  let n = ${pw(1)};
  let c = i % inner;
  let q = i / inner;
  let r = f32(q % ${pw(2)});
  let a = q / ${pw(2)};
  var acc: f32 = 0.0;
  for (var j = 0u; j < n; j++) {
    if (I[j] == r) { acc = acc + S[(a * n + j) * inner + c]; }
  }
  O[i] = acc;
}`;
}
