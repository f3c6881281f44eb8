/**
 * @file Philox 4x32-10 streams, one invocation per counter block, exactly as
 * `randomElement` / `randomStream` in lib/philox.ts define them: uniform and bits use
 * word `i % 4` of block `i / 4`; normal uses Box–Muller on words (0,1) or (2,3) of block
 * `i / 2`.
 * @module
 */
import { type RandomKind, WGSL_PHILOX } from "../lib/philox.ts";
import { main1d, paramsDecl, pw } from "./common.ts";

/**
 * A random-stream kernel. Bindings: O (u32 for "bits", so raw words survive; else f32),
 * params `[size, blocks, counterLo, counterHi, key0, key1]`.
 *
 * @example
 * ```ts
 * import { randomKernel } from "./random.ts";
 * if (!randomKernel("normal").includes("log(u1)")) throw new Error("bad");
 * ```
 */
export function randomKernel(kind: RandomKind): string {
  const ty = kind === "bits" ? "u32" : "f32";
  let body: string;
  if (kind === "normal") {
    body = [0, 1].map((h) => {
      const w0 = "xyzw"[2 * h], w1 = "xyzw"[2 * h + 1];
      return `if (2u * i + ${h}u < size) {
    // u1 in (0, 1] so the log is finite (the CPU definition).
    let u1 = f32((w.${w0} >> 8u) + 1u) * (1.0 / 16777216.0);
    let u2 = f32(w.${w1} >> 8u) * (1.0 / 16777216.0);
    O[2u * i + ${h}u] = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
  }`;
    }).join("\n  ");
  } else {
    body = [0, 1, 2, 3].map((h) => {
      const w = `w.${"xyzw"[h]}`;
      const v = kind === "bits" ? w : `f32(${w} >> 8u) * (1.0 / 16777216.0)`;
      return `if (4u * i + ${h}u < size) { O[4u * i + ${h}u] = ${v}; }`;
    }).join("\n  ");
  }
  return `${WGSL_PHILOX}
@group(0) @binding(0) var<storage, read_write> O: array<${ty}>;
${paramsDecl(6, 1)}
${main1d(pw(1))}
  let size = ${pw(0)};
  let lo = ${pw(2)} + i;
  let carry = select(0u, 1u, lo < ${pw(2)});
  let w = philox_(vec4<u32>(lo, ${pw(3)} + carry, 0u, 0u), vec2<u32>(${pw(4)}, ${pw(5)}));
  ${body}
}`;
}
