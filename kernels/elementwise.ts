/**
 * @file Elementwise kernels: strided n-input, m-output maps (every elementwise op and fused
 * expression, with broadcasting through per-input strides), fill, iota and strided copy.
 * The body of a map is generated from the op table of lib/ir.ts (see `emitExpr`), so both
 * backends evaluate the same formulas.
 * @module
 */
import { main1d, paramsDecl, pf, pw, stridedOffsets } from "./common.ts";

/**
 * How a map kernel reads one input: at `i`, at 0 (a broadcast scalar), at `i % C` (a row
 * vector of the last collapsed axis's length C broadcast over leading axes, like a bias:
 * "row4" when C is a multiple of 4, so vec4 kernels load it as vec4s), or through strides.
 */
export type InputMode = "contiguous" | "scalar" | "row" | "row4" | "strided";

/** Description of a strided n-input, m-output map. */
export interface MapSpec {
  /** WGSL helper functions the body may call. */
  helpers: string;
  /** How each input is read. */
  modes: readonly InputMode[];
  /** Rank of the (collapsed) output shape. */
  rank: number;
  /** Statements computing the outputs from `in0..in{n−1}`. */
  body: string;
  /** One WGSL expression per output. */
  outs: readonly string[];
  /** Extra parameter words after the layout of `mapParamWords` (scalars the body reads). */
  extraWords?: number;
  /**
   * Four elements per invocation (2–3x faster on lavapipe; no input may be strided). Storages
   * are multiples of 16 bytes, so the tail may be overrun.
   */
  vec4?: boolean;
  /**
   * The row length C of "row"/"row4" inputs is a power of two: index with a mask instead of
   * `%` (x86 has no vector integer division, so llvmpipe runs one scalar divide per lane).
   */
  rowPow2?: boolean;
}

/**
 * Word layout of a map kernel's parameters: `[n, shape(rank), strides of each strided input
 * (rank each, in input order)]`, then `extraWords` scalars for the body.
 *
 * @example
 * ```ts
 * import { mapParamWords } from "./elementwise.ts";
 * if (mapParamWords(2, ["strided", "contiguous"]) !== 5) throw new Error("bad");
 * ```
 */
export function mapParamWords(rank: number, modes: readonly InputMode[]): number {
  return 1 + rank + rank * modes.filter((m) => m === "strided").length;
}

/**
 * A strided map: inputs I0.. (read) at bindings 0..n−1, outputs O0.. at n..n+m−1, params
 * after (see `mapParamWords`). Every input binding is read, so "auto" layouts include it.
 *
 * @example
 * ```ts
 * import { mapKernel } from "./elementwise.ts";
 * const code = mapKernel({
 *   helpers: "", modes: ["contiguous", "scalar"], rank: 1,
 *   body: "let v = in0 + in1;", outs: ["v"],
 * });
 * if (!code.includes("I1[0]")) throw new Error("bad");
 * ```
 */
export function mapKernel(spec: MapSpec): string {
  const { modes, rank } = spec;
  const v4 = spec.vec4 === true;
  if (v4 && modes.includes("strided")) {
    throw new RangeError("Expected no strided input in a vec4 map kernel");
  }
  const nIn = modes.length;
  const decl: string[] = [];
  for (let k = 0; k < nIn; k++) {
    const ty = v4 && (modes[k] === "contiguous" || modes[k] === "row4") ? "vec4<f32>" : "f32";
    decl.push(`@group(0) @binding(${k}) var<storage, read> I${k}: array<${ty}>;`);
  }
  spec.outs.forEach((_, j) => {
    const ty = v4 ? "vec4<f32>" : "f32";
    decl.push(`@group(0) @binding(${nIn + j}) var<storage, read_write> O${j}: array<${ty}>;`);
  });
  const words = mapParamWords(rank, modes) + (spec.extraWords ?? 0);
  const strideAt: number[] = [], names: string[] = [];
  let at = 1 + rank;
  modes.forEach((m, k) => {
    if (m === "strided") {
      strideAt.push(at);
      names.push(`o${k}`);
      at += rank;
    }
  });
  // The row length C is the last collapsed axis (parameter word `rank`).
  const rowLen = pw(rank);
  const mod = (x: string, len: string) =>
    spec.rowPow2 ? `((${x}) & (${len} - 1u))` : `((${x}) % ${len})`;
  let main: string;
  if (v4) {
    // Rows of C % 4 == 0 hold whole vec4s: the vec4 at i of the output lines up with the vec4
    // at i % (C / 4) of the row. Other rows load each component at (4i + c) % C.
    const loads = modes.map((m, k) =>
      m === "contiguous"
        ? `let w${k} = I${k}[i];`
        : m === "row4"
        ? `let w${k} = I${k}[${mod("i", `(${rowLen} / 4u)`)}];`
        : m === "row"
        ? ""
        : `let w${k} = I${k}[0];`
    );
    const lanes = [..."xyzw"].map((c, ci) => {
      const ins = modes.map((m, k) =>
        `let in${k}: f32 = ${
          m === "contiguous" || m === "row4"
            ? `w${k}.${c}`
            : m === "row"
            ? `I${k}[${mod(`4u * i + ${ci}u`, rowLen)}]`
            : `w${k}`
        };`
      );
      return `{
${ins.join("\n")}
${spec.body}
${spec.outs.map((o, j) => `r${j}.${c} = ${o};`).join("\n")}
}`;
    });
    main = `${main1d(`(${pw(0)} + 3u) / 4u`)}
${loads.join("\n")}
${spec.outs.map((_, j) => `var r${j}: vec4<f32>;`).join("\n")}
${lanes.join("\n")}
${spec.outs.map((_, j) => `O${j}[i] = r${j};`).join("\n")}
}`;
  } else {
    const at = (m: InputMode, k: number) =>
      m === "contiguous"
        ? "i"
        : m === "scalar"
        ? "0"
        : m === "row" || m === "row4"
        ? mod("i", rowLen)
        : `o${k}`;
    const loads = modes.map((m, k) => `let in${k}: f32 = I${k}[${at(m, k)}];`);
    main = `${main1d(pw(0))}
${names.length ? stridedOffsets("i", rank, 1, strideAt, names) : ""}
${loads.join("\n")}
${spec.body}
${spec.outs.map((o, j) => `O${j}[i] = ${o};`).join("\n")}
}`;
  }
  return `${spec.helpers}
${decl.join("\n")}
${paramsDecl(words, nIn + spec.outs.length)}
${main}`;
}

/**
 * `O[i] = value` bit for bit (u32 stores keep NaN payloads). Params `[n, bits(value)]`.
 *
 * @example
 * ```ts
 * import { fillKernel } from "./elementwise.ts";
 * if (!fillKernel().includes("array<u32>")) throw new Error("bad");
 * ```
 */
export function fillKernel(): string {
  return `@group(0) @binding(0) var<storage, read_write> O: array<u32>;
${paramsDecl(2, 1)}
${main1d(pw(0))}
  O[i] = ${pw(1)};
}`;
}

/**
 * `O[i] = start + i·step`. Params `[n, bits(start), bits(step)]`.
 *
 * @example
 * ```ts
 * import { iotaKernel } from "./elementwise.ts";
 * if (!iotaKernel().includes("f32(i)")) throw new Error("bad");
 * ```
 */
export function iotaKernel(): string {
  return `@group(0) @binding(0) var<storage, read_write> O: array<f32>;
${paramsDecl(3, 1)}
${main1d(pw(0))}
  O[i] = ${pf(1)} + f32(i) * ${pf(2)};
}`;
}

/**
 * Strided copy `D[dOff + Σ c·dStr] = S[sOff + Σ c·sStr]` over a `rank`-D shape, moving u32
 * words so that every bit pattern survives. Bindings: S (read), D, params
 * `[n, sOff, dOff, shape(rank), sStr(rank), dStr(rank)]`.
 *
 * @example
 * ```ts
 * import { copyKernel } from "./elementwise.ts";
 * if (!copyKernel(2).includes("D[")) throw new Error("bad");
 * ```
 */
export function copyKernel(rank: number): string {
  return `@group(0) @binding(0) var<storage, read> S: array<u32>;
@group(0) @binding(1) var<storage, read_write> D: array<u32>;
${paramsDecl(3 + 3 * rank, 2)}
${main1d(pw(0))}
${stridedOffsets("i", rank, 3, [3 + rank, 3 + 2 * rank], ["sOf", "dOf"])}
  D[${pw(2)} + dOf] = S[${pw(1)} + sOf];
}`;
}
