/**
 * @file One fused elementwise expression applied to several groups of same-sized inputs in
 * one dispatch (the whole optimizer update over all parameters in one kernel).
 * @module
 */
import { main1d, paramsDecl, pw } from "./common.ts";

/** Description of a grouped fused map. */
export interface FusedGroupsSpec {
  /** WGSL helper functions the body may call. */
  helpers: string;
  /** Groups bound in this dispatch. */
  groups: number;
  /** Per-group inputs (named `in0..in{k−1}` in the body). */
  inputs: number;
  /** Per-group outputs. */
  outputs: number;
  /** Shared scalar inputs (named `in{k}..in{k+s−1}`, read at element 0). */
  scalars: number;
  /** Statements computing the outputs. */
  body: string;
  /** One WGSL expression per output. */
  outs: readonly string[];
  /** Scalar parameter words the body reads after `fusedGroupsParamWords(groups)`. */
  extraWords: number;
  /**
   * Per output, the group input it overwrites in place (bound read_write, no output binding),
   * or −1 for its own output buffer. Default: all −1.
   */
  inPlace?: readonly number[];
}

/**
 * Parameter words before the body's scalars: `[total, end of group 0, …, end of group G−1,
 * length of group 0, …]` in vec4 slots: group g covers ⌈size/4⌉ slots from the previous end,
 * and each end is rounded up to a whole workgroup so the group test is uniform within a
 * workgroup (a divergent chain of branches runs every branch masked on SIMD CPUs).
 *
 * @example
 * ```ts
 * import { fusedGroupsParamWords } from "./fused_groups.ts";
 * if (fusedGroupsParamWords(3) !== 7) throw new Error("bad");
 * ```
 */
export function fusedGroupsParamWords(groups: number): number {
  return 1 + 2 * groups;
}

/**
 * WGSL of a grouped fused map, four elements per invocation (2–3x faster on lavapipe; storages
 * are padded to 16 bytes, so a group's last vec4 may run into the padding). Bindings: for each group its `inputs` then its `outputs`
 * buffers (except outputs written in place into an input), then the `scalars` buffers, then the parameter uniform. Each invocation finds its
 * group with a chain of comparisons against the cumulative ends (bindings cannot be indexed
 * dynamically in WGSL), loads its inputs, evaluates the body once, and stores through the
 * same chain.
 *
 * @example
 * ```ts
 * import { fusedGroupsKernel } from "./fused_groups.ts";
 * const src = fusedGroupsKernel({
 *   helpers: "", groups: 2, inputs: 1, outputs: 1, scalars: 0,
 *   body: "let v0 = in0 * 2.0;", outs: ["v0"], extraWords: 0,
 * });
 * if (!src.includes("G1_O0")) throw new Error("bad");
 * ```
 */
export function fusedGroupsKernel(s: FusedGroupsSpec): string {
  const { groups: G, inputs: k, outputs: m, scalars: ns } = s;
  const inPlace = s.inPlace ?? Array.from({ length: m }, () => -1);
  const decl: string[] = [];
  let b = 0;
  for (let g = 0; g < G; g++) {
    for (let t = 0; t < k; t++) {
      const mode = inPlace.includes(t) ? "read_write" : "read";
      decl.push(`@group(0) @binding(${b++}) var<storage, ${mode}> G${g}_I${t}: array<vec4<f32>>;`);
    }
    for (let t = 0; t < m; t++) {
      if (inPlace[t]! >= 0) continue;
      decl.push(
        `@group(0) @binding(${b++}) var<storage, read_write> G${g}_O${t}: array<vec4<f32>>;`,
      );
    }
  }
  for (let t = 0; t < ns; t++) {
    decl.push(`@group(0) @binding(${b++}) var<storage, read> S${t}: array<f32>;`);
  }
  const words = fusedGroupsParamWords(G) + s.extraWords;
  const end = (g: number) => pw(1 + g);
  const chain = (stmt: (g: number) => string) =>
    Array.from({ length: G }, (_, g) => {
      const head = g === 0 ? "if" : g === G - 1 ? "else" : "else if";
      const cond = g === G - 1 && g > 0 ? "" : ` (i < ${end(g)})`;
      return `${head}${cond} { ${stmt(g)} }`;
    }).join(" ");
  const load = chain((g) =>
    [
      `grp = ${g}u;`,
      g === 0 ? "j = i;" : `j = i - ${end(g - 1)};`,
      `ok = j < ${pw(1 + G + g)};`,
      ...Array.from({ length: k }, (_, t) => `x${t} = G${g}_I${t}[j];`),
    ].join(" ")
  );
  const store = Array.from(
    { length: G },
    (_, g) =>
      `${g === 0 ? "if" : "else if"} (grp == ${g}u) { ${
        Array.from(
          { length: m },
          (_, t) => `${inPlace[t]! >= 0 ? `G${g}_I${inPlace[t]}` : `G${g}_O${t}`}[j] = r${t};`,
        ).join(" ")
      } }`,
  ).join(" ");
  return `${s.helpers}
${decl.join("\n")}
${paramsDecl(words, b)}
${main1d(pw(0))}
  var grp: u32 = 0u;
  var j: u32 = 0u;
  var ok = false;
  ${Array.from({ length: k }, (_, t) => `var x${t}: vec4<f32>;`).join(" ")}
  ${Array.from({ length: m }, (_, t) => `var r${t}: vec4<f32>;`).join(" ")}
  ${load}
  ${Array.from({ length: ns }, (_, t) => `let in${k + t}: f32 = S${t}[0];`).join(" ")}
  ${
    [..."xyzw"].map((c) =>
      `{
  ${Array.from({ length: k }, (_, t) => `let in${t} = x${t}.${c};`).join(" ")}
  ${s.body}
  ${s.outs.map((o, t) => `r${t}.${c} = ${o};`).join(" ")}
  }`
    ).join("\n  ")
  }
  if (ok) { ${store} }
}`;
}
