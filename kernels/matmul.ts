/**
 * @file WGSL builders for batched f32 matmul, one pipeline per layout class.
 *
 * Two families, chosen by adapter:
 * - `direct`: register-blocked, reads storage directly (no workgroup memory, no barriers).
 *   Each invocation computes an R × C output block (C a multiple of 4, kept as vec4s); the
 *   invocations of one SIMD chunk spread along one output axis. This is the lavapipe/llvmpipe
 *   choice: there `workgroupBarrier` is expensive (shared-memory tiles ran 1.6–2.8 GFLOP/s at
 *   n = 1024), and every storage load inside a loop costs a per-lane, per-component loop, so
 *   big register blocks that amortise loads win (16 × 16 blocks: ~24 GFLOP/s unloaded).
 * - `tiled`: 64×64 output tiles staged through workgroup memory, 16×16 invocations of 4×4
 *   outputs each, the usual shape on discrete and integrated GPUs.
 *
 * Shapes live in the uniform buffer, so a pipeline is reused across sizes; only the transpose
 * flags, 16-byte alignment of rows (which decides `array<vec4<f32>>` bindings), the block
 * shape and the workgroup shape enter the key.
 * @module
 */
import { type Expr, type MatmulGeom, WGSL_HELPERS } from "../lib/ir.ts";
import { checkChoice, checkInt } from "../lib/_util.ts";
import { emitExpr } from "./expr.ts";

/** A generated matmul pipeline: WGSL source, dispatch size and cache key. */
export interface MatmulKernel {
  /** WGSL source; entry point `main`. */
  code: string;
  /** `dispatchWorkgroups(x, y, z)` arguments, each ≤ 65535. */
  workgroups: [number, number, number];
  /** Identifies `code`: equal keys mean identical sources, so pipelines may be cached by key. */
  key: string;
}

/** Which kernel family to generate. */
export type MatmulVariant = "direct" | "tiled";

/** Overrides for {@linkcode buildMatmul}, used by tests and benchmarks to pin a variant. */
export interface MatmulBuildOptions {
  /** Kernel family; by default `direct` on CPU adapters and `tiled` otherwise. */
  variant?: MatmulVariant;
  /** Output rows per invocation in the `direct` family (1–32). */
  rows?: number;
  /** vec4 column groups per invocation in the `direct` family (1–8). */
  vecs?: number;
  /** k steps per inner-loop iteration in the `direct` family (4 or 8). */
  unroll?: number;
  /** Which output axis the invocations of a SIMD chunk spread over in the `direct` family. */
  lanes?: "rows" | "cols";
  /** Workgroup `[x, y]` in the `direct` family (x is the lane axis); default one SIMD chunk. */
  workgroup?: [number, number];
  /**
   * Order of the FMAs in the `direct` family's unrolled loop: `"k-outer"` touches every
   * accumulator once per k step; `"k-inner"` (default) runs each accumulator's k steps back to
   * back. Both add the products of one accumulator in the same (ascending k) order, so the
   * results are bitwise equal; llvmpipe spills most of a 16 × 16 block's 256 accumulators, and
   * k-inner reloads each spilled one once per unrolled iteration instead of once per k step:
   * measured on lavapipe at the flow-map MLP's shapes ([2048, 256] × [256, 256] NN and NT,
   * [256, 2048] × [2048, 256] TN), 16–19 % less CPU time per matmul, same compile time.
   */
  fmaOrder?: "k-outer" | "k-inner";
  /** Applied to each output element as it is stored (see {@linkcode MatmulEpilogue}). */
  epilogue?: MatmulEpilogue;
  /**
   * `direct` family, `transB` only: read B through a uniform buffer holding `uniformB`
   * consecutive rows of B (output columns), one dispatch per such chunk (see
   * {@linkcode uniformChunk}). The uniform reads then cost one scalar load each on llvmpipe
   * instead of a loop over the SIMD lanes.
   */
  uniformB?: number;
}

/**
 * A store-time epilogue: each output element `C[.., j]` becomes `expr` evaluated with input 0
 * the accumulated product and input `i ≥ 1` element `j` of the row vector bound at
 * `@binding(2 + i)` (a bias; the uniform moves after them). Fusing e.g. `act(acc + bias)`
 * saves the bias-add and activation dispatches of a linear layer, and two full passes over
 * the output.
 */
export interface MatmulEpilogue {
  /** The expression over the accumulator (input 0) and the row vectors (inputs 1..). */
  expr: Expr;
  /** Number of row vectors. */
  rows: number;
}

interface DirectShape {
  uniformB?: number;
  rows: number;
  vecs: number;
  unroll: number;
  lanes: "rows" | "cols";
  workgroup?: [number, number];
  fmaOrder?: "k-outer" | "k-inner";
}

/** WebGPU caps every `dispatchWorkgroups` dimension at 65535 by default. */
const MAX_WG = 65535;

/**
 * Whether an adapter is a CPU implementation (lavapipe/llvmpipe, SwiftShader, WARP), where
 * barrier-free register blocking beats shared-memory tiling.
 *
 * @example
 * ```ts
 * import { isCpuAdapter } from "./matmul.ts";
 * if (!isCpuAdapter({ isFallback: false, description: "llvmpipe (LLVM 15.0.6, 256 bits)" })) {
 *   throw new Error("llvmpipe is a CPU adapter");
 * }
 * ```
 */
export function isCpuAdapter(adapter: { isFallback: boolean; description: string }): boolean {
  return adapter.isFallback || /llvmpipe|lavapipe|swiftshader|microsoft basic render/i.test(
    adapter.description,
  );
}

function checkGeom(g: MatmulGeom): void {
  for (const name of ["batch", "m", "n", "k", "aBatchStride", "bBatchStride"] as const) {
    const v = g[name];
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new RangeError(
        `Expected matmul geometry ${name} to be an integer in [0, 4294967295] but found ${v}`,
      );
    }
  }
}

/**
 * Build the WGSL matmul kernel for one geometry on one adapter.
 *
 * Bindings: `@binding(0)` A and `@binding(1)` B (read-only storage), `@binding(2)` out
 * (read-write storage, `[batch, m, n]` contiguous), `@binding(3)` a uniform of 8 u32:
 * `batch, m, n, k, transA, transB, aBatchStride, bBatchStride`. A is `[batch, m, k]`
 * (`[batch, k, m]` if `transA`), B is `[batch, k, n]` (`[batch, n, k]` if `transB`); a batch
 * stride of 0 broadcasts that operand. Buffers must be bound at offset 0 (or any multiple of
 * 16 bytes), because aligned layouts read them as `array<vec4<f32>>`. With `opts.epilogue`,
 * each stored element becomes the epilogue expression of the accumulator and its row vectors
 * (e.g. `act(acc + bias[col])`); the `r` row vectors take `@binding(3..2+r)` and the uniform
 * moves to `@binding(3+r)`.
 *
 * @example
 * ```ts
 * import { buildMatmul } from "./matmul.ts";
 * const k = buildMatmul(
 *   { batch: 1, m: 7, n: 33, k: 5, transA: false, transB: true, aBatchStride: 0, bBatchStride: 0 },
 *   { isFallback: true, description: "llvmpipe" },
 * );
 * if (!k.code.includes("fn main") || k.workgroups.some((w) => w < 1 || w > 65535)) {
 *   throw new Error("bad kernel");
 * }
 * ```
 */
export function buildMatmul(
  g: MatmulGeom,
  adapter: { isFallback: boolean; description: string },
  opts: MatmulBuildOptions = {},
): MatmulKernel {
  checkGeom(g);
  const variant = checkChoice(
    "matmul variant",
    opts.variant ?? (isCpuAdapter(adapter) ? "direct" : "tiled"),
    ["direct", "tiled"] as const,
  );
  const epi = opts.epilogue ? epilogueCode(opts.epilogue) : undefined;
  if (variant === "tiled") return buildTiled(g, epi);
  const auto = directDefaults(g, simdLanes(adapter));
  const shape: DirectShape = {
    rows: checkInt("matmul rows per invocation", opts.rows ?? auto.rows, 1, 32),
    vecs: checkInt("matmul vec4 column groups per invocation", opts.vecs ?? auto.vecs, 1, 8),
    unroll: opts.unroll ?? 4,
    lanes: checkChoice("matmul lanes", opts.lanes ?? auto.lanes, ["rows", "cols"] as const),
    workgroup: opts.workgroup ?? [simdLanes(adapter), 1],
    fmaOrder: opts.fmaOrder ?? "k-inner",
  };
  if (opts.uniformB !== undefined) {
    const nc = opts.uniformB;
    if (
      !g.transB || g.k % 4 !== 0 || shape.lanes !== "rows" || shape.workgroup![1] !== 1 ||
      !Number.isInteger(nc) || nc < 4 * shape.vecs || nc % (4 * shape.vecs) !== 0 ||
      nc * g.k * 4 > UNIFORM_BYTES || (g.batch > 1 && g.bBatchStride !== 0)
    ) {
      throw new RangeError(
        `Expected matmul uniformB (${nc} columns) to be a multiple of the column block ` +
          `${4 * shape.vecs} with transB, k % 4 = 0 (k = ${g.k}), lanes along rows, one ` +
          `B for every batch and at most ${UNIFORM_BYTES} bytes per chunk`,
      );
    }
    shape.uniformB = nc;
  }
  if (shape.unroll !== 4 && shape.unroll !== 8) {
    throw new RangeError(`Expected matmul unroll to be 4 or 8 but found ${shape.unroll}`);
  }
  const [wx, wy] = shape.workgroup!;
  checkInt("matmul workgroup x", wx, 1, 256);
  checkInt("matmul workgroup y", wy, 1, 256 / wx);
  return buildDirect(g, shape, epi);
}

const PARAMS = `struct Params {
  batch: u32, m: u32, n: u32, k: u32,
  transA: u32, transB: u32, aBatchStride: u32, bBatchStride: u32,
}`;

/** A generated epilogue: the row-vector bindings, `fn epi_(acc, col)`, and its cache key. */
interface EpilogueCode {
  rows: number;
  decl: string;
  key: string;
  /** Cheap enough to inline into every unrolled store (calls no helper function). */
  inline: boolean;
}

// `epi_(acc, col)`: the epilogue expression, applied as each output element is stored. Its
// scalars are inlined as literals (the matmul uniform has no spare words); they enter the
// key through the body text.
function epilogueCode(e: MatmulEpilogue): EpilogueCode {
  const x = emitExpr([e.expr], { inline: true });
  const ins = Array.from({ length: e.rows }, (_, i) => `  let in${i + 1} = E${i}[col];`);
  const fn = `fn epi_(z: f32, col: u32) -> f32 {
  let in0 = z;
${ins.join("\n")}
${x.body}
  return ${x.outs[0]};
}`;
  const binds = Array.from(
    { length: e.rows },
    (_, i) => `@group(0) @binding(${3 + i}) var<storage, read> E${i}: array<f32>;`,
  );
  return {
    rows: e.rows,
    decl: `${binds.join("\n")}\n${x.callsHelpers ? WGSL_HELPERS : ""}\n${fn}`,
    key: `/epi${e.rows}:${x.body.replaceAll("\n", " ")}=>${x.outs[0]}`,
    inline: !x.heavy,
  };
}

// The uniform-B variant appends the chunk's output columns [colBase, colEnd).
const PARAMS_U = `struct Params {
  batch: u32, m: u32, n: u32, k: u32,
  transA: u32, transB: u32, aBatchStride: u32, bBatchStride: u32,
  colBase: u32, colEnd: u32, pad0: u32, pad1: u32,
}`;

/** The most bytes one uniform-buffer binding may hold (WebGPU's default limit). */
export const UNIFORM_BYTES = 65536;

/**
 * The chunk (output columns per dispatch) for reading B of an `transB` matmul through a
 * uniform buffer on a CPU adapter, or 0 when the geometry does not suit it: the largest
 * multiple of 16 columns whose rows of B fit one 64 KiB binding and divide n, for one B
 * shared by all batches, k % 4 = 0 and more rows than chunk columns (so the SIMD lanes run
 * along rows and every lane reads the same B element). On lavapipe a storage read costs a
 * loop over the 8 SIMD lanes even when all lanes read one address; a uniform read with a
 * uniform address is one scalar load. Measured at [2048, 64] × [64, 256]ᵀ: ~20 % less CPU time.
 *
 * @example
 * ```ts
 * import { uniformChunk } from "./matmul.ts";
 * const g = { batch: 1, m: 2048, n: 256, k: 256, transA: false, transB: true, aBatchStride: 0, bBatchStride: 0 };
 * if (uniformChunk(g) !== 64) throw new Error("64 rows of 256 floats fill 64 KiB");
 * ```
 */
export function uniformChunk(g: MatmulGeom): number {
  if (!g.transB || g.k % 4 !== 0 || g.k === 0 || (g.batch > 1 && g.bBatchStride !== 0)) return 0;
  let nc = Math.floor(UNIFORM_BYTES / (4 * g.k) / 16) * 16;
  nc = Math.min(nc, g.n - (g.n % 16));
  while (nc >= 16 && g.n % nc !== 0) nc -= 16;
  return nc >= 16 && g.m > nc ? nc : 0;
}

function bindings(
  aVec: boolean,
  bVec: boolean,
  cVec: boolean,
  epi?: EpilogueCode,
  uniformBVec4s = 0,
): string {
  const t = (v: boolean) => (v ? "array<vec4<f32>>" : "array<f32>");
  const b = uniformBVec4s
    ? `var<uniform> B: array<vec4<f32>, ${uniformBVec4s}>`
    : `var<storage, read> B: ${t(bVec)}`;
  return `${uniformBVec4s ? PARAMS_U : PARAMS}
@group(0) @binding(0) var<storage, read> A: ${t(aVec)};
@group(0) @binding(1) ${b};
@group(0) @binding(2) var<storage, read_write> C: ${t(cVec)};
@group(0) @binding(${3 + (epi?.rows ?? 0)}) var<uniform> P: Params;
${epi ? epi.decl : ""}`;
}

const epiKey = (e?: EpilogueCode) => e?.key ?? "";

const ceilDiv = (a: number, b: number) => Math.floor((a + b - 1) / b);
const cap = (x: number) => Math.max(1, Math.min(MAX_WG, x));

// ---------------------------------------------------------------------------------------------
// direct: rows × vec4 per invocation, no workgroup memory

/** SIMD width of a CPU adapter: llvmpipe reports its vector width ("256 bits" = 8 f32 lanes). */
function simdLanes(adapter: { description: string }): number {
  const bits = Number(/(\d+) bits/.exec(adapter.description)?.[1] ?? 256);
  return Math.max(4, Math.min(16, Math.floor(bits / 32)));
}

/**
 * Register-block shape for the `direct` family. llvmpipe loads storage memory one lane and one
 * component at a time inside loops (uniform addresses included), so loads, not FMAs, set the
 * pace: an R×C block costs R + C loaded floats per R·C FMAs. Measured at n = 1024, 16 × 16 ran
 * 1.6–2× faster than 8 × 4; 32 × 32 ran 1.2–1.7× faster again but took ~10 s to compile, so blocks
 * stop at 16 × 16. Lanes go along the longer output axis; a lane's block shrinks until every
 * SIMD lane gets one, and the other block shrinks until there are enough workgroups to share
 * among threads.
 */
function directDefaults(
  g: MatmulGeom,
  lanes: number,
): { rows: number; vecs: number; lanes: "rows" | "cols" } {
  const along: "rows" | "cols" = g.n >= g.m ? "cols" : "rows";
  const [L, O] = along === "cols" ? [g.n, g.m] : [g.m, g.n];
  // Column blocks come in vec4s, so 4 is their floor; row blocks may go down to 1.
  const [lMin, oMin] = along === "cols" ? [4, 1] : [1, 4];
  const sizes = [16, 8, 4, 2, 1];
  let bl = sizes.find((s) => s >= lMin && L >= lanes * s) ?? lMin;
  let bo = sizes.find((s) => s >= oMin && O >= s) ?? oMin;
  const workgroups = () => ceilDiv(ceilDiv(L, bl), lanes) * ceilDiv(O, bo);
  while (workgroups() < 8 && bo > Math.max(4, oMin)) bo /= 2;
  while (workgroups() < 8 && bl > Math.max(4, lMin)) bl /= 2;
  const [rows, cols] = along === "cols" ? [bo, bl] : [bl, bo];
  return { rows, vecs: cols / 4, lanes: along };
}

function buildDirect(g: MatmulGeom, o: DirectShape, epi?: EpilogueCode): MatmulKernel {
  const { rows: R, vecs: V, unroll: KU, lanes } = o;
  const { transA, transB } = g;
  // vec4 reads need every row start (and batch offset) on a 16-byte boundary.
  const nAl = g.n % 4 === 0, kAl = g.k % 4 === 0, mAl = g.m % 4 === 0;
  const cVec = nAl;
  const bVec = transB ? kAl : nAl;
  // transA reads vec4 across rows, so the row block must be a whole number of vec4s.
  const aVec = transA ? mAl && R % 4 === 0 : kAl;
  const rowBlocks = ceilDiv(g.m, R), colBlocks = ceilDiv(g.n, 4 * V);
  // The lane axis (x) spans column blocks (A reads uniform across a SIMD chunk) or row blocks
  // (B reads uniform).
  const [wx, wy] = o.workgroup ?? [8, 1];
  const rr = [...Array(R).keys()], vv = [...Array(V).keys()], cc = [...Array(4 * V).keys()];
  const q4 = [0, 1, 2, 3];
  const X = "xyzw";

  const aIdx = (row: string, p: string) =>
    transA ? `aOff + (${p}) * m + ${row}` : `aOff + ${row} * k + (${p})`;
  const U = o.uniformB ?? 0;
  const bIdx = (p: string, col: string) =>
    U
      ? `(${col} - P.colBase) * k + (${p})`
      : transB
      ? `bOff + ${col} * k + (${p})`
      : `bOff + (${p}) * n + ${col}`;
  const ld = (arr: string, vec: boolean, idx: string) =>
    vec ? `${arr}[(${idx}) / 4u][(${idx}) % 4u]` : `${arr}[${idx}]`;
  const aS = (r: number, p: string) => ld("A", aVec, aIdx(`r${r}`, p));
  const bS = (p: string, c: number) => ld("B", bVec, bIdx(p, `c${c}`));

  // Main loop: KU steps of p per iteration, in groups of 4 (s = group). `a{r}_{s}` is
  // A[row r, p+4s .. p+4s+3]; `b{q}_{v}` is B[p+q, cols 4v .. 4v+3].
  const main: string[] = [];
  for (let s4 = 0; s4 < KU / 4; s4++) {
    const p = `p + ${4 * s4}u`;
    if (!transA && aVec) {
      for (const r of rr) main.push(`let a${r}_${s4} = A[(${aIdx(`r${r}`, p)}) / 4u];`);
    } else if (transA && aVec) {
      // A^T rows: vec4 across 4 output rows per p, transposed in registers. Row groups past m
      // are clamped to the last aligned group (m % 4 == 0 here), so reads stay in bounds.
      for (let r4 = 0; r4 < R; r4 += 4) {
        for (const q of q4) {
          main.push(
            `let t${r4 / 4}_${s4}_${q} = A[(aOff + (${p} + ${q}u) * m + ` +
              `min(row0 + ${r4}u, m - 4u)) / 4u];`,
          );
        }
      }
      for (const r of rr) {
        const blk = Math.floor(r / 4), comp = X[r % 4];
        main.push(
          `let a${r}_${s4} = vec4<f32>(${q4.map((q) => `t${blk}_${s4}_${q}.${comp}`).join(", ")});`,
        );
      }
    } else {
      for (const r of rr) {
        main.push(
          `let a${r}_${s4} = vec4<f32>(${q4.map((q) => aS(r, `${p} + ${q}u`)).join(", ")});`,
        );
      }
    }
    if (!transB && bVec) {
      for (const q of q4) {
        for (const v of vv) {
          main.push(`let b${4 * s4 + q}_${v} = B[(${bIdx(`${p} + ${q}u`, `cv${v}`)}) / 4u];`);
        }
      }
    } else if (transB && bVec) {
      for (const c of cc) main.push(`let u${c}_${s4} = B[(${bIdx(p, `c${c}`)}) / 4u];`);
      for (const q of q4) {
        for (const v of vv) {
          main.push(
            `let b${4 * s4 + q}_${v} = vec4<f32>(${
              q4.map((c) => `u${4 * v + c}_${s4}.${X[q]}`).join(", ")
            });`,
          );
        }
      }
    } else {
      for (const q of q4) {
        for (const v of vv) {
          main.push(
            `let b${4 * s4 + q}_${v} = vec4<f32>(${
              q4.map((c) => bS(`${p} + ${q}u`, 4 * v + c)).join(", ")
            });`,
          );
        }
      }
    }
    if (o.fmaOrder !== "k-inner") {
      for (const q of q4) {
        for (const r of rr) {
          for (const v of vv) {
            main.push(
              `acc${r}_${v} = fma(vec4<f32>(a${r}_${s4}.${X[q]}), b${
                4 * s4 + q
              }_${v}, acc${r}_${v});`,
            );
          }
        }
      }
    }
  }
  if (o.fmaOrder === "k-inner") {
    for (const v of vv) {
      for (const r of rr) {
        for (let s4 = 0; s4 < KU / 4; s4++) {
          for (const q of q4) {
            main.push(
              `acc${r}_${v} = fma(vec4<f32>(a${r}_${s4}.${X[q]}), b${
                4 * s4 + q
              }_${v}, acc${r}_${v});`,
            );
          }
        }
      }
    }
  }
  // Tail over the last k % KU steps, scalar reads.
  const tail: string[] = [];
  for (const v of vv) {
    tail.push(`let bt${v} = vec4<f32>(${q4.map((c) => bS("p", 4 * v + c)).join(", ")});`);
  }
  for (const r of rr) {
    tail.push(`let at${r} = vec4<f32>(${aS(r, "p")});`);
    for (const v of vv) tail.push(`acc${r}_${v} = fma(at${r}, bt${v}, acc${r}_${v});`);
  }

  // A cheap epilogue (a bias add, relu) is applied in each unrolled store. One that calls a
  // helper re-reads the block just stored in a loop instead: inlined 256 times, gelu's erf
  // made a 16 × 16 pipeline take ~3 s to compile on llvmpipe.
  const inline = !!epi && epi.inline;
  const store: string[] = [];
  for (const r of rr) {
    const row = `row0 + ${r}u`;
    for (const v of vv) {
      const acc = `acc${r}_${v}`;
      if (cVec) {
        const val = inline
          ? `vec4<f32>(${q4.map((c) => `epi_(${acc}.${X[c]}, cv${v} + ${c}u)`).join(", ")})`
          : acc;
        store.push(
          `if (${row} < m && cv${v} < n) { C[(cOff + (${row}) * n + cv${v}) / 4u] = ${val}; }`,
        );
      } else {
        for (const c of q4) {
          const val = inline ? `epi_(${acc}.${X[c]}, cv${v} + ${c}u)` : `${acc}.${X[c]}`;
          store.push(
            `if (${row} < m && cv${v} + ${c}u < n) { C[cOff + (${row}) * n + cv${v} + ${c}u] = ` +
              `${val}; }`,
          );
        }
      }
    }
  }

  if (epi && !inline) {
    const at = (i: string) => (cVec ? `C[${i} / 4u][${i} % 4u]` : `C[${i}]`);
    store.push(
      `for (var r = 0u; r < ${R}u; r++) {`,
      `  let row = row0 + r;`,
      `  if (row >= m) { break; }`,
      `  for (var c = 0u; c < ${4 * V}u; c++) {`,
      `    let col = col0 + c;`,
      `    if (col < n) { let i = cOff + row * n + col; ${at("i")} = epi_(${at("i")}, col); }`,
      `  }`,
      `}`,
    );
  }
  const [rbExpr, cbExpr] = lanes === "cols" ? ["y", "x"] : ["x", "y"];
  // With a workgroup one invocation deep on an axis, index it by workgroup_id: the shader
  // compiler then knows it is uniform, and llvmpipe turns the loads it feeds into one scalar
  // load instead of a per-lane loop.
  const start = (axis: string, w: number) => (w === 1 ? `wid.${axis}` : `gid.${axis}`);
  const wRB = lanes === "cols" ? wy : wx, wCB = lanes === "cols" ? wx : wy;
  const code = `${bindings(aVec, bVec, cVec, epi, U ? (U * g.k) / 4 : 0)}

fn block(bz: u32, row0: u32, col0: u32) {
  let m = P.m; let n = P.n; let k = P.k;
  let aOff = bz * P.aBatchStride;
  let bOff = bz * P.bBatchStride;
  let cOff = bz * m * n;
  // Out-of-range rows and columns read a clamped (valid) element and are never stored, which
  // keeps the inner loop free of branches.
${rr.map((r) => `  let r${r} = min(row0 + ${r}u, m - 1u);`).join("\n")}
${cc.map((c) => `  let c${c} = min(col0 + ${c}u, ${U ? "P.colEnd" : "n"} - 1u);`).join("\n")}
${vv.map((v) => `  let cv${v} = col0 + ${4 * v}u;`).join("\n")}
${rr.flatMap((r) => vv.map((v) => `  var acc${r}_${v} = vec4<f32>(0.0);`)).join("\n")}
  let kMain = k - k % ${KU}u;
  for (var p = 0u; p < kMain; p += ${KU}u) {
${main.map((s) => "    " + s).join("\n")}
  }
  for (var p = kMain; p < k; p++) {
${tail.map((s) => "    " + s).join("\n")}
  }
${store.map((s) => "  " + s).join("\n")}
}

@compute @workgroup_size(${wx}, ${wy}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  // Grid-stride loops: a dimension whose block count exceeds 65535 workgroups wraps around.
  let rowBlocks = (P.m + ${R - 1}u) / ${R}u;
  let colBlocks = (${U ? "P.colEnd - P.colBase" : "P.n"} + ${4 * V - 1}u) / ${4 * V}u;
  for (var bz = gid.z; bz < P.batch; bz += nwg.z) {
    for (var rb = ${start(rbExpr, wRB)}; rb < rowBlocks; rb += nwg.${rbExpr} * ${wRB}u) {
      for (var cb = ${start(cbExpr, wCB)}; cb < colBlocks; cb += nwg.${cbExpr} * ${wCB}u) {
        block(bz, rb * ${R}u, ${U ? "P.colBase + " : ""}cb * ${4 * V}u);
      }
    }
  }
}
`;
  const key =
    `matmul/direct/${R}x${4 * V}k${KU}${
      o.fmaOrder === "k-inner" ? "i" : ""
    }/${lanes}/w${wx}x${wy}/` +
    `${transA ? "T" : "N"}${transB ? "T" : "N"}/${aVec ? "v" : "s"}${bVec ? "v" : "s"}` +
    `${cVec ? "v" : "s"}${U ? `/ubo${U}x${g.k}` : ""}${epiKey(epi)}`;
  const rbWG = ceilDiv(rowBlocks, wRB), cbWG = ceilDiv(colBlocks, wCB);
  const workgroups: [number, number, number] = lanes === "cols"
    ? [cap(cbWG), cap(rbWG), cap(g.batch)]
    : [cap(rbWG), cap(cbWG), cap(g.batch)];
  return { code, workgroups, key };
}

// ---------------------------------------------------------------------------------------------
// tiled: 64×64 output tile per workgroup through workgroup memory

const TM = 64, TN = 64, TK = 16;

function buildTiled(g: MatmulGeom, epi?: EpilogueCode): MatmulKernel {
  const { transA, transB } = g;
  // Global→shared loads map consecutive invocations to consecutive addresses in whichever
  // layout the operand has, so each load wave is coalesced.
  const aLoad = transA
    ? `let kk = e / ${TM}u; let rr = e % ${TM}u;`
    : `let rr = e / ${TK}u; let kk = e % ${TK}u;`;
  const aIdx = transA ? `aOff + gk * m + gr` : `aOff + gr * k + gk`;
  const bLoad = transB
    ? `let cc = e / ${TK}u; let kk = e % ${TK}u;`
    : `let kk = e / ${TN}u; let cc = e % ${TN}u;`;
  const bIdx = transB ? `bOff + gc * k + gk` : `bOff + gk * n + gc`;
  const per = (TM * TK) / 256;
  const code = `${bindings(false, false, false, epi)}

var<workgroup> As: array<array<f32, ${TM}>, ${TK}>;
var<workgroup> Bs: array<array<f32, ${TN}>, ${TK}>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let m = P.m; let n = P.n; let k = P.k;
  let tilesM = (m + ${TM - 1}u) / ${TM}u;
  let tilesN = (n + ${TN - 1}u) / ${TN}u;
  // Grid-stride over tiles keeps every dimension within the 65535-workgroup limit; all bounds
  // are workgroup-uniform, as the barriers require.
  for (var bz = wid.z; bz < P.batch; bz += nwg.z) {
    let aOff = bz * P.aBatchStride;
    let bOff = bz * P.bBatchStride;
    let cOff = bz * m * n;
    for (var tm = wid.y; tm < tilesM; tm += nwg.y) {
      for (var tn = wid.x; tn < tilesN; tn += nwg.x) {
        let row0 = tm * ${TM}u;
        let col0 = tn * ${TN}u;
        var acc: array<array<f32, 4>, 4>;
        for (var r = 0u; r < 4u; r++) { for (var c = 0u; c < 4u; c++) { acc[r][c] = 0.0; } }
        for (var k0 = 0u; k0 < k; k0 += ${TK}u) {
          for (var q = 0u; q < ${per}u; q++) {
            let e = li + q * 256u;
            ${aLoad}
            let gr = row0 + rr; let gk = k0 + kk;
            var v = 0.0;
            if (gr < m && gk < k) { v = A[${aIdx}]; }
            As[kk][rr] = v;
          }
          for (var q = 0u; q < ${per}u; q++) {
            let e = li + q * 256u;
            ${bLoad}
            let gc = col0 + cc; let gk = k0 + kk;
            var v = 0.0;
            if (gc < n && gk < k) { v = B[${bIdx}]; }
            Bs[kk][cc] = v;
          }
          workgroupBarrier();
          for (var kk = 0u; kk < ${TK}u; kk++) {
            // Rows ty + 16r and columns tx + 16c: B reads are consecutive across tx and A reads
            // broadcast, so neither conflicts on banks.
            var bv: array<f32, 4>;
            for (var c = 0u; c < 4u; c++) { bv[c] = Bs[kk][lid.x + 16u * c]; }
            for (var r = 0u; r < 4u; r++) {
              let av = As[kk][lid.y + 16u * r];
              for (var c = 0u; c < 4u; c++) { acc[r][c] = fma(av, bv[c], acc[r][c]); }
            }
          }
          workgroupBarrier();
        }
        for (var r = 0u; r < 4u; r++) {
          let gr = row0 + lid.y + 16u * r;
          for (var c = 0u; c < 4u; c++) {
            let gc = col0 + lid.x + 16u * c;
            if (gr < m && gc < n) { C[cOff + gr * n + gc] = ${
    epi ? "epi_(acc[r][c], gc)" : "acc[r][c]"
  }; }
          }
        }
      }
    }
  }
}
`;
  const key = `matmul/tiled/${TM}x${TN}x${TK}/${transA ? "T" : "N"}${transB ? "T" : "N"}${
    epiKey(epi)
  }`;
  const workgroups: [number, number, number] = [
    cap(ceilDiv(g.n, TN)),
    cap(ceilDiv(g.m, TM)),
    cap(g.batch),
  ];
  return { code, workgroups, key };
}
