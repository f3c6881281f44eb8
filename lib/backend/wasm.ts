/**
 * @file The `wasm` backend: the CPU backend with the work that dominates training done fast —
 * matmul by a WebAssembly SIMD kernel (kernels/wasm_gemm.ts, packed Goto/BLIS blocks, run on
 * the calling thread and `threads − 1` workers sharing one WebAssembly memory), fused
 * self-attention forward and backward by SIMD kernels of the same module on the same threads
 * (and LayerNorm + AdaLN modulation, split by sample; the gated residual's backward is a kernel
 * compiled at run time, lib/backend/wasm_jit.ts),
 * Sinkhorn's log-sum-exp by another, and every elementwise expression compiled once per
 * structure into one `f32x4` WebAssembly function (lib/backend/wasm_jit.ts; big calls split in
 * chunks across the same threads, which compile the function from its bytes) or, for ops
 * without a vector form, one JavaScript loop (V8 inlines the op table's functions into it).
 * The backend's arrays are views of the same WebAssembly memory (lib/backend/wasm_arena.ts), so
 * kernels read their inputs and write their results in place; arrays from elsewhere (and past
 * `arenaBytes`) are copied into a call's scratch. Random streams come from a SIMD Philox kernel
 * (kernels/wasm_random.ts) with the CPU backend's bits. Everything else is the CPU backend's.
 * Elementwise results and sums are bit-identical to the CPU backend for exact ops (the same
 * f32 rounding per node, the same f64 summation order; transcendentals within a few ulp);
 * matmul and attention accumulate in f32 in a different order, like the WebGPU kernels.
 *
 * Why it exists (issue 18): on a CPU-only machine WebGPU runs on lavapipe, whose generated
 * matmul code reaches 15–21 GFLOP/s on 2 cores here; this kernel runs ~40–50 GFLOP/s on one
 * core of the same machine (docs/engine_round2.md).
 * @module
 */
import type { ElementwiseGroup, MatmulEpilogue, MatmulOutputs, Storage, View } from "./backend.ts";
import { weightGradGeom } from "./backend.ts";
import { CpuBackend, type CpuStorage, forStrided } from "./cpu.ts";
import { binaryRow, type Expr, type MatmulGeom, type ReduceOp, unaryRow } from "../ir.ts";
import { stridesOf } from "../shape.ts";
import { GEMM_FMA_WASM, GEMM_PLAIN_WASM } from "../../kernels/wasm_gemm_bin.ts";
import { ATTN_R, GEMM_EPILOGUE, GEMM_NR } from "../../kernels/wasm_gemm.ts";
import { Arena } from "./wasm_arena.ts";
import {
  RANDOM_CONST_WORDS,
  randomCost,
  randomGroup,
  randomModule,
} from "../../kernels/wasm_random.ts";
import { randomElement, type RandomKind, type RandomState, randomStream } from "../philox.ts";
import {
  compileGatedBackward,
  compileSimd,
  type SimdAccess,
  simdCost,
  type SimdKernel,
  simdKey,
  simdSupports,
} from "./wasm_jit.ts";

const d = (s: Storage): Float32Array => (s as CpuStorage).data;

function decode(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * Whether this engine runs WebAssembly SIMD with shared memory (what the backend needs).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { wasmSimdAvailable } from "./wasm.ts";
 * assert.equal(typeof wasmSimdAvailable(), "boolean"); // true under Deno 2
 * ```
 */
export function wasmSimdAvailable(): boolean {
  try {
    if (typeof SharedArrayBuffer === "undefined") return false;
    return WebAssembly.validate(decode(GEMM_PLAIN_WASM.base64) as BufferSource);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise: one compiled loop per (expression structure, input access pattern).

type Access = SimdAccess;
type Kernel = (
  fns: readonly ((...a: number[]) => number)[],
  cs: Float64Array,
  ins: readonly Float32Array[],
  outs: Float32Array[],
  rows: number,
  cols: number,
) => void;

interface Lowered {
  key: string;
  fns: ((...a: number[]) => number)[];
  consts: number[];
  build: () => Kernel;
}

/** Lower an expression DAG to loop-body source; the key names its structure (not values). */
function lower(outputs: readonly Expr[], access: readonly Access[]): Lowered {
  const fns: ((...a: number[]) => number)[] = [];
  const fnIndex = new Map<(...a: number[]) => number, number>();
  const consts: number[] = [];
  const ids = new Map<Expr, string>();
  const keyParts: string[] = [access.join(",")];
  const lines: string[] = [];
  const fnRef = (f: (...a: number[]) => number) => {
    let i = fnIndex.get(f);
    if (i === undefined) fnIndex.set(f, i = fns.push(f) - 1);
    return `f${i}`;
  };
  const konst = (v: number) => `k${consts.push(Math.fround(v)) - 1}`;
  const visit = (e: Expr): string => {
    const have = ids.get(e);
    if (have) return have;
    let rhs: string;
    if (e.kind === "input") {
      const a = access[e.index];
      rhs = a === "scalar"
        ? `s${e.index}`
        : a === "col"
        ? `c${e.index}`
        : a === "row"
        ? `x${e.index}[j]`
        : `x${e.index}[i]`;
      keyParts.push(`i${e.index}`);
    } else if (e.kind === "const") {
      rhs = konst(e.value);
      keyParts.push("k");
    } else if (e.kind === "unary") {
      const x = visit(e.x);
      rhs = `F(${fnRef(unaryRow(e.op).cpu as (...a: number[]) => number)}(${x}, ${konst(e.p0)}, ${
        konst(e.p1)
      }))`;
      keyParts.push(`u${e.op}(${x})`);
    } else if (e.kind === "binary") {
      const a = visit(e.a), b = visit(e.b);
      rhs = `F(${fnRef(binaryRow(e.op).cpu as (...a: number[]) => number)}(${a}, ${b}))`;
      keyParts.push(`b${e.op}(${a},${b})`);
    } else {
      const c = visit(e.c), a = visit(e.a), b = visit(e.b);
      rhs = `(${c} !== 0 ? ${a} : ${b})`;
      keyParts.push(`w(${c},${a},${b})`);
    }
    const id = `v${ids.size}`;
    ids.set(e, id);
    lines.push(`const ${id} = ${rhs};`);
    return id;
  };
  const outIds = outputs.map(visit);
  keyParts.push(`->${outIds.join(",")}`);
  const nIn = access.length;
  const build = (): Kernel => {
    const head: string[] = ["const F = Math.fround;"];
    for (let i = 0; i < fns.length; i++) head.push(`const f${i} = fns[${i}];`);
    for (let i = 0; i < consts.length; i++) head.push(`const k${i} = cs[${i}];`);
    for (let j = 0; j < nIn; j++) {
      head.push(`const x${j} = ins[${j}];`);
      if (access[j] === "scalar") head.push(`const s${j} = x${j}[0];`);
    }
    outIds.forEach((_, o) => head.push(`const o${o} = outs[${o}];`));
    const cols = access.map((a, j) => (a === "col" ? `const c${j} = x${j}[r];` : "")).join(" ");
    const src = `${head.join("\n")}
let i = 0;
for (let r = 0; r < rows; r++) {
  ${cols}
  for (let j = 0; j < cols; j++, i++) {
    ${lines.join("\n    ")}
    ${outIds.map((id, o) => `o${o}[i] = ${id};`).join(" ")}
  }
}`;
    return new Function("fns", "cs", "ins", "outs", "rows", "cols", src) as Kernel;
  };
  return { key: keyParts.join(";"), fns, consts, build };
}

/**
 * How each input is read over `outShape` collapsed to [rows, cols]: contiguous ("dense"),
 * one value ("scalar"), a vector along the columns ("row", e.g. a bias) or along the rows
 * ("col"), or one row per `group` consecutive rows ("group": a per-sample vector broadcast
 * over the tokens, such as DiT's AdaLN gate [b, 1, d] against [b, t, d]). Inputs that fit
 * none of these are copied dense first (as the CPU backend does).
 */
function plan(
  inputs: readonly Float32Array[],
  strides: readonly (readonly number[])[],
  shape: readonly number[],
): { access: (Access | "group" | "copy")[]; rows: number; cols: number; group: number } {
  const n = shape.reduce((a, b) => a * b, 1);
  const live = (ax: number) => shape[ax]! > 1;
  const isDense = (st: readonly number[], from: number, to: number, base: number) => {
    // Axes [from, to) have the strides of a contiguous array of shape[from..to) times base.
    let s = base;
    for (let ax = to - 1; ax >= from; ax--) {
      if (live(ax) && st[ax] !== s) return false;
      s *= shape[ax]!;
    }
    return true;
  };
  const zero = (st: readonly number[], from: number, to: number) => {
    for (let ax = from; ax < to; ax++) if (live(ax) && st[ax] !== 0) return false;
    return true;
  };
  let split = -1;
  const access: (Access | "group" | "copy")[] = inputs.map((x, j) => {
    const st = strides[j]!;
    if (x.length === n && isDense(st, 0, shape.length, 1)) return "dense";
    if (zero(st, 0, shape.length)) return "scalar";
    for (let p = 1; p < shape.length; p++) {
      if (split !== -1 && p !== split) continue;
      if (zero(st, 0, p) && isDense(st, p, shape.length, 1)) {
        split = p;
        return "row";
      }
      if (zero(st, p, shape.length) && isDense(st, 0, p, 1)) {
        split = p;
        return "col";
      }
    }
    return "copy";
  });
  // Grouped rows: dense columns [p, end), zero strides over row axes [q, p) and the rows
  // before q contiguous [·, cols]: row r reads row ⌊r / group⌋. One group size per call.
  let group = 0;
  const size = (a: number, b: number) => shape.slice(a, b).reduce((x, y) => x * y, 1);
  access.forEach((a, j) => {
    if (a !== "copy") return;
    const st = strides[j]!;
    for (let p = 1; p < shape.length; p++) {
      if ((split !== -1 && p !== split) || !isDense(st, p, shape.length, 1)) continue;
      for (let q = 1; q < p; q++) {
        const g = size(q, p);
        if (g <= 1 || (group !== 0 && g !== group) || size(0, q) <= 1) continue;
        if (zero(st, q, p) && isDense(st, 0, q, size(p, shape.length))) {
          split = p;
          group = g;
          access[j] = "group";
          return;
        }
      }
    }
  });
  const cols = split === -1 ? n : shape.slice(split).reduce((a, b) => a * b, 1);
  return { access, rows: cols === 0 ? 0 : n / cols, cols, group };
}

// ---------------------------------------------------------------------------------------------
// Strided copies: dims merged where both layouts allow, then plain nested loops (the CPU
// backend's per-element callback walk cost more than the arithmetic it fed).

/** Drop size-1 axes and merge neighbours that are contiguous in every stride list. */
function collapse(
  shape: readonly number[],
  strides: readonly (readonly number[])[],
): { shape: number[]; strides: number[][] } {
  const sh: number[] = [], st: number[][] = strides.map(() => []);
  for (let ax = 0; ax < shape.length; ax++) {
    const n = shape[ax]!;
    if (n === 1) continue;
    const last = sh.length - 1;
    if (last >= 0 && st.every((s, j) => s[last] === strides[j]![ax]! * n)) {
      sh[last]! *= n;
      st.forEach((s, j) => (s[last] = strides[j]![ax]!));
    } else {
      sh.push(n);
      st.forEach((s, j) => s.push(strides[j]![ax]!));
    }
  }
  return { shape: sh, strides: st };
}

/** dst[dOff + Σ idx·dSt] = src[sOff + Σ idx·sSt] over `shape`. */
function stridedCopy(
  dst: Float32Array,
  dOff: number,
  dSt: readonly number[],
  src: Float32Array,
  sOff: number,
  sSt: readonly number[],
  shape: readonly number[],
): void {
  if (shape.some((n) => n === 0)) return;
  const c = collapse(shape, [dSt, sSt]);
  if (c.shape.length > 4) {
    forStrided(shape, [dSt, sSt], (_i, o) => (dst[dOff + o[0]!] = src[sOff + o[1]!]!));
    return;
  }
  while (c.shape.length < 4) {
    c.shape.unshift(1);
    c.strides[0]!.unshift(0);
    c.strides[1]!.unshift(0);
  }
  const [n0, n1, n2, n3] = c.shape as [number, number, number, number];
  const [d0, d1, d2, d3] = c.strides[0] as [number, number, number, number];
  const [s0, s1, s2, s3] = c.strides[1] as [number, number, number, number];
  const run = d3 === 1 && s3 === 1 && n3 >= 32;
  for (let a = 0; a < n0; a++) {
    for (let b = 0; b < n1; b++) {
      for (let e = 0; e < n2; e++) {
        const dBase = dOff + a * d0 + b * d1 + e * d2, sBase = sOff + a * s0 + b * s1 + e * s2;
        if (run) dst.set(src.subarray(sBase, sBase + n3), dBase);
        else for (let i = 0; i < n3; i++) dst[dBase + i * d3] = src[sBase + i * s3]!;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Matmul (packed panels in a shared WebAssembly memory, row blocks split across threads) and
// the other kernels that run on the same threads (attention: (batch, head) pairs split).

/**
 * Run the chunks of a split elementwise call: on every thread of the call (the workers run
 * this function's source). `blk` (i32, in the shared memory): [0] the next chunk to claim, [1]
 * np pointer arguments, [2] segments (arrays of one call: a group of elementwiseGroups each),
 * [3] items (4-float vectors of a flat kernel, or rows) per chunk, [4] flat?, [5] columns, [6]
 * chunks in all, then np byte steps per item, then per segment its first chunk, items,
 * elements and np base addresses, then one done flag per chunk (a chunk lies in one segment).
 * Claims chunks until none is left; with `redo`, instead runs every chunk not yet done (the
 * caller's last step: a worker the scheduler has paused in the middle of a chunk does not hold
 * the call up, and writing the same bits twice is harmless).
 */
function drainChunks(k: (...a: number[]) => void, blk: Int32Array, redo: boolean): void {
  const np = blk[1]!, segs = blk[2]!, chunk = blk[3]!, flat = blk[4]!, cols = blk[5]!;
  const chunks = blk[6]!, seg0 = 7 + np, sw = 3 + np, done = seg0 + segs * sw;
  const args: number[] = new Array(np + 2);
  let s = 0;
  for (let next = 0;; next++) {
    let c = next;
    if (!redo) c = Atomics.add(blk, 0, 1);
    else if (c < chunks && Atomics.load(blk, done + c) !== 0) continue;
    if (c >= chunks) return;
    // A thread's chunks come in increasing order: its segment only moves forward.
    while (s + 1 < segs && blk[seg0 + (s + 1) * sw]! <= c) s++;
    const at = seg0 + s * sw, lo = (c - blk[at]!) * chunk, n = blk[at + 2]!;
    const len = Math.min(blk[at + 1]! - lo, chunk);
    for (let i = 0; i < np; i++) args[i] = blk[at + 3 + i]! + lo * blk[7 + i]!;
    args[np] = flat ? 1 : len;
    args[np + 1] = flat ? Math.min(n - 4 * lo, 4 * len) : cols;
    k(...args);
    Atomics.store(blk, done + c, 1);
  }
}

/**
 * Run an SGEMM kernel (`k`, with its 13 arguments `a`: a[7] the smallest share in row blocks, a[8]
 * the row blocks in all) over shares of its row blocks claimed until none is left: the caller's
 * thread from the last row block down, the workers from the first up, each share a
 * 1/(2·parts) of what is left (guided scheduling, at least a[7] blocks). One i32 at `claim`
 * counts the blocks taken from the front (low 16 bits) and from the back (high 16), changed by
 * compare-and-swap so no block is run twice. A static split into halves left one thread idle
 * while the other finished whenever the two ran at different speeds (another process on a
 * core; a worker waking late): 6–19 ms a DiT step of the caller waiting. Each output is still
 * one row block's whole k loop, so the bits do not depend on the shares.
 */
function claimRows(
  k: (...a: number[]) => void,
  a: number[],
  claim: Int32Array,
  parts: number,
  fromBack: boolean,
): void {
  const min = a[7]!, total = a[8]!;
  for (;;) {
    const v = Atomics.load(claim, 0);
    const front = v & 0xffff, back = v >>> 16, rest = total - front - back;
    if (rest <= 0) return;
    const size = Math.min(rest, Math.max(min, Math.ceil(rest / (2 * parts))));
    if (Atomics.compareExchange(claim, 0, v, (v + (fromBack ? size << 16 : size)) | 0) !== v) {
      continue;
    }
    const lo = fromBack ? total - back - size : front;
    a[7] = lo;
    a[8] = lo + size;
    k(...a);
    a[7] = min;
    a[8] = total;
  }
}

// The worker: instantiate the module on the shared memory, then serve kernel calls posted
// through its control block (state 1 = posted: ctrl[1] the kernel's index in KERNELS,
// ctrl[2..15] its arguments, all i32; 4 = taken by the worker; 0 = done; 3 = trapped; 2 =
// stop). The caller may take back a posted call the worker has not taken (4 is set by
// compare-and-swap from 1) and may return while a worker is still in one (4): elementwise
// calls do both, their chunks being shared rather than assigned (drainChunks). "elementwise"
// is a kernel compiled at run time (lib/backend/wasm_jit.ts): ctrl[2] its id, ctrl[3..4] the
// address and length of its module's bytes in the memory (compiled on first use, then cached
// by id: a worker may compile synchronously, a page's main thread could not), ctrl[5] the
// address of the call's chunk block. "gemm_rows" runs an SGEMM over claimed shares of its row
// blocks (claimRows): ctrl[2] the kernel's index plus the call's thread count · 256, ctrl[3..15]
// the kernel's arguments.
const KERNELS = [
  "gemm_n",
  "gemm_t",
  "attn_fwd",
  "attn_bwd",
  "ln_mod_fwd",
  "ln_mod_bwd",
  "col_sum",
  "lse_rows",
  "lse_cols",
  "elementwise",
  "gemm_rows",
] as const;
const kernelIndex = (k: (typeof KERNELS)[number]): number => KERNELS.indexOf(k);
// Byte address of claimRows' i32 (after the 15 control blocks of Gemm.BASE; one split call runs
// at a time).
const CLAIM_AT = 960;
const WORKER_BODY = `
  const { module, mem, ctrlOffset } = data;
  const inst = new WebAssembly.Instance(module, { env: { mem } });
  const fns = ${JSON.stringify(KERNELS)}.map((k) => inst.exports[k]);
  const JIT = ${KERNELS.indexOf("elementwise")};
  const jit = new Map();
  const drainChunks = ${drainChunks.toString()};
  const claimRows = ${claimRows.toString()};
  const ROWS = ${KERNELS.indexOf("gemm_rows")};
  const ctrl = new Int32Array(mem.buffer, ctrlOffset, 16);
  post("ready");
  for (;;) {
    Atomics.wait(ctrl, 0, 0);
    const state = Atomics.compareExchange(ctrl, 0, 1, 4);
    if (state === 2) break;
    if (state !== 1) continue; // taken back by the caller before this worker woke
    try {
      if (ctrl[1] === JIT) {
        let k = jit.get(ctrl[2]);
        if (k === undefined) {
          // A copy: the bytes' region is reused by later calls.
          const bytes = new Uint8Array(mem.buffer, ctrl[3], ctrl[4]).slice();
          k = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { mem } }).exports.k;
          jit.set(ctrl[2], k);
        }
        drainChunks(k, new Int32Array(mem.buffer, ctrl[5]), false);
      } else if (ctrl[1] === ROWS) {
        claimRows(fns[ctrl[2] & 255], Array.from(ctrl.subarray(3, 16)),
          new Int32Array(mem.buffer, ${CLAIM_AT}, 1), ctrl[2] >> 8, false);
      } else {
        // Extra arguments are ignored by a shorter kernel.
        fns[ctrl[1]](ctrl[2], ctrl[3], ctrl[4], ctrl[5], ctrl[6], ctrl[7], ctrl[8], ctrl[9],
          ctrl[10], ctrl[11], ctrl[12], ctrl[13], ctrl[14], ctrl[15]);
      }
      Atomics.store(ctrl, 0, 0);
    } catch {
      Atomics.store(ctrl, 0, 3); // a trap: the caller raises instead of waiting forever
    }
    Atomics.notify(ctrl, 0);
  }`;
// A browser Worker (from a Blob: no file or network access needed).
const WEB_WORKER_SRC =
  `self.onmessage = ({ data }) => { const post = (m) => self.postMessage(m);${WORKER_BODY} };`;
// Under Deno, node:worker_threads: its workers can be unref'ed, so a worker parked in
// Atomics.wait does not keep the process alive after the program's last line (Deno's web
// Workers do, and have no unref).
const NODE_WORKER_SRC = `const { parentPort } = require("node:worker_threads");
parentPort.once("message", (data) => { const post = (m) => parentPort.postMessage(m);${WORKER_BODY} });`;

interface Helper {
  stop(): void;
  ctrl: Int32Array;
}

async function startWorker(
  module: WebAssembly.Module,
  mem: WebAssembly.Memory,
  ctrlOffset: number,
): Promise<Helper> {
  const ctrl = new Int32Array(mem.buffer, ctrlOffset, 16);
  const data = { module, mem, ctrlOffset };
  if ("Deno" in globalThis) {
    // A computed specifier keeps browser bundlers from resolving the node: module.
    const spec = "node:worker_threads";
    const { Worker: NodeWorker } = await import(spec) as {
      Worker: new (src: string, o: { eval: boolean }) => {
        once(ev: string, f: (x: unknown) => void): void;
        postMessage(x: unknown): void;
        unref(): void;
        terminate(): void;
      };
    };
    const w = new NodeWorker(NODE_WORKER_SRC, { eval: true });
    await new Promise<void>((res, rej) => {
      w.once("message", () => res());
      w.once("error", (e) => rej(new Error(`wasm backend: a matmul worker failed (${e})`)));
      w.postMessage(data);
    });
    w.unref();
    return { ctrl, stop: () => w.terminate() };
  }
  const url = URL.createObjectURL(new Blob([WEB_WORKER_SRC], { type: "text/javascript" }));
  try {
    const w = new Worker(url, { type: "module" });
    await new Promise<void>((res, rej) => {
      w.onmessage = () => res();
      w.onerror = (e) => {
        e.preventDefault();
        rej(new Error(`wasm backend: a matmul worker failed to start (${e.message})`));
      };
      w.postMessage(data);
    });
    return { ctrl, stop: () => w.terminate() };
  } finally {
    URL.revokeObjectURL(url);
  }
}

// Row-major B at least this wide is packed (measured: n = 1024 ran at half speed in place).
const PACK_N = 512;
// The SGEMM's k block (kernels/wasm_gemm.ts: the sum runs over GEMM_KC rows of B at a time, the
// partial sums kept in C), for a transposed A only. Its MR columns are one cache line per k, which
// stay in L1 across the panels only for a short k: the weight gradients dW = dzᵀ·x of a DiT step
// have k = 3136, and one pass re-read A's lines from L2 for every panel and all of B from L3 for
// every row block (30 GFLOP/s against ~47 for the forward products). Kernel alone, one thread,
// k = 3136: blocks of 64–256 measured alike (42–49 GFLOP/s for m × n of 128 × 512, 128 × 768
// and 512 × 128, within the load's noise), one pass 33–35. A row-major A (MR rows read
// sequentially) gained nothing: [1024]² · [1024]² ran 49 GFLOP/s blocked against 51 in one pass.
// Re-measured with the inputs cold (64 MB written between calls, A freshly produced by another
// product, as in a step), 2 threads: 64 and 128 alike, 32 5–15 % slower. Neither an A packed
// into contiguous MR-wide panels (read with constant offsets) nor panels outer / row blocks inner
// gained over A read in place (±2 %, kernel alone, one thread); loading one float of each cache
// line of the block's A and B before it ran up to 5 % faster alone and 1–3 % slower in the step.
const GEMM_KC = 128;
/** The SGEMM's k block for a product (see GEMM_KC); `k` itself means one pass. */
function kBlock(k: number, transA: boolean): number {
  return transA && k > GEMM_KC ? GEMM_KC : Math.max(1, k);
}
/**
 * The smallest share of a split SGEMM's `mb` row blocks (Gemm.#splitRows). With k blocks
 * (`kBlocked`) every share reads all of B once more from L3, so shares are an eighth of the
 * rows at least; otherwise B's rows stay in L2 and 4 blocks (24 rows) are enough. (Halves, one
 * share a thread, ran the DiT's dW products 2–10 % faster alone but the whole step 2–3 % slower
 * (a late or preempted thread holds half the work); 4 blocks, a sixteenth and a quarter measured
 * as an eighth in the step, ±1 %.)
 */
function rowShare(mb: number, kBlocked: boolean): number {
  return kBlocked ? Math.ceil(mb / 8) : 4;
}
// Calls with fewer multiply-adds than this stay on one thread (waking a worker costs tens of µs).
const SPLIT_WORK = 1 << 18;
// Elementwise calls split across the threads need elements × (simdCost − EW_MEMORY_COST) of
// at least this: GELU from ~100k elements, ~0.4 ms of one thread at ~3.7 ns an element, while
// a split call of 4096 elements cost 4–15 µs more than one thread. (On the 2-core machine
// here, at load 6–8 with autogroup scheduling, a process gets one core's share however many
// threads it runs, so no split gained at any size: the threshold is for idle cores.) The first
// EW_MEMORY_COST units of a DAG's per-element cost are its loads and stores, which a second
// core on the same memory does not speed up (adds and chains of 8 multiplies over 0.26–1.6M
// elements ran up to 1.8× slower split).
const EW_SPLIT_WORK = 1 << 20;
const EW_MEMORY_COST = 8;
// An elementwiseGroups call (all its groups one kernel call) discounts this many units of its
// per-element cost for every dense array it reads or writes instead (at least EW_MEMORY_COST):
// an optimizer's update streams p, g, m and v in and p, m, v out (28 bytes an element) and is
// memory-bound. Adam (cost 26, 7 arrays) over the bench DiT's ~1.2M parameters in one call,
// alternating A/B (bench/adam_ab.ts, load 1.7–2): 1.3–1.8 ms wall and 1.4–2.1 ms CPU a step on
// one thread, 1.4–1.7 wall and 2.3–2.8 CPU split across 2 (and 2.8 against 2.3 wall once
// another job held a core: the in-place call waits for a descheduled worker's last chunk).
const EW_STREAM_COST = 4;
// Work of one chunk of a split elementwise call (~10 µs of one thread: the calls into the
// kernel, ~0.2 µs each, stay ~2 % of it, and a late worker holds the call up by one chunk).
const EW_CHUNK_WORK = 1 << 16;
// Plain output arrays (past the arena) at least this long (128 kB) are recycled (ArrayPool).
// CPU per copy-out into a fresh array / a recycled one, load ~7.5: 6 / 0.6 µs at 4096 elements,
// 10 / 4 at 32k, 600 / 27 at 128k, 6400 / 110 at 512k (past the allocator's mmap threshold every
// fresh array costs page faults). Idle ones are kept up to the program's peak live bytes, or
// POOL_FLOOR.
const POOL_MIN = 1 << 15;
const POOL_FLOOR = 64 << 20;
// Uploaded, allocated and filled arrays of at least this many floats are put in the memory
// (smaller ones are copied into a call's scratch for less than the bookkeeping would cost).
const ARENA_MIN = 1024;
// Sums of at least this many elements over a middle axis run in WebAssembly (Gemm.colSum).
const COL_SUM_MIN = 4096;
// ... and split across the threads from this many (memory-bound: on the idle machine, cache hot,
// [3136, 384] ran 0.23 ms on one thread and 0.18 on two, [3136, 128] 0.08 and 0.09; under load
// a split call waits for a descheduled worker).
const COL_SUM_SPLIT = 1 << 20;
// Log-sum-exps of at least this many elements split their rows (or columns) across the threads
// (an exp an element: ~65 µs of one thread).
const LSE_SPLIT = 1 << 16;
// Flops per element of a LayerNorm + modulate pass (for the split threshold).
const LN_COST = 8;
// Query rows per block of the attention backward (its P, dS, dSᵀ scratch is 3 · this · n floats).
const ATTN_ROW_BLOCK = 64;
const up4 = (k: number) => (k + 3) & ~3;
// Room for this many indices of normals whose f32 rounding the kernel could not decide (see
// kernels/wasm_random.ts; ~1.4e-6 of them): past it the whole stream is recomputed in JavaScript.
const RANDOM_FLAGS = 252;
const bitsF32 = new Float32Array(1), bitsI32 = new Int32Array(bitsF32.buffer);
/** An f32's bits as an i32 (every kernel argument is an i32, so one worker protocol fits all). */
function f32Bits(x: number): number {
  bitsF32[0] = x;
  return bitsI32[0]!;
}

/**
 * Freed plain result arrays kept for reuse, by length: results past the arena's `arenaBytes`
 * (and before the arena, every result) leave the shared memory by a copy into a plain array;
 * into a fresh array that copy cost ~30
 * ms for 6.4 MB at load 8 (new pages: faults and zeroing; ~1.6 M-element DiT activations), into
 * a recycled one 0.5 ms. Only arrays this pool handed out come back (its WeakSet). It keeps at
 * most the larger of `floorBytes` and the most the program has had live at once (`live()` at
 * each take), so it does not raise the program's peak, and drops its oldest arrays first, so
 * sizes no longer asked for make room for those that are. A DiT training step (bench/cases/
 * dit.ts) frees ~0.9 GB of activations in its backward pass that the next forward asks for
 * again: a 256 MB cap missed 2/3 of the takes, ~1.1 GB of fresh arrays a step.
 */
class ArrayPool {
  readonly #free = new Map<number, Float32Array[]>();
  readonly #order = new Set<Float32Array>(); // kept arrays, oldest first
  readonly #ours = new WeakSet<Float32Array>();
  #bytes = 0;
  #peak = 0;
  /** Bytes the program has live (its backend's liveBytes). */
  live: () => number = () => 0;
  constructor(readonly minLength: number, readonly floorBytes: number) {}

  /** An array of `n` elements (contents unspecified: the caller writes every one). */
  take(n: number): Float32Array {
    if (n < this.minLength) return new Float32Array(n);
    this.#peak = Math.max(this.#peak, this.live());
    const a = this.#free.get(n)?.pop();
    if (a) {
      this.#order.delete(a);
      this.#bytes -= a.byteLength;
      return a;
    }
    const o = new Float32Array(n);
    this.#ours.add(o);
    return o;
  }

  /** Keep `a` for a later `take` if it came from here (dropping older arrays to make room). */
  give(a: Float32Array): void {
    const cap = Math.max(this.floorBytes, this.#peak);
    if (!this.#ours.has(a) || a.byteLength > cap) return;
    for (const old of this.#order) {
      if (this.#bytes + a.byteLength <= cap) break;
      const list = this.#free.get(old.length)!;
      list.splice(list.indexOf(old), 1);
      this.#order.delete(old);
      this.#bytes -= old.byteLength;
    }
    let list = this.#free.get(a.length);
    if (!list) this.#free.set(a.length, list = []);
    list.push(a);
    this.#order.add(a);
    this.#bytes += a.byteLength;
  }

  /** Drop every kept array. */
  clear(): void {
    this.#free.clear();
    this.#order.clear();
    this.#bytes = 0;
  }
}

// The most bytes the backend's arrays take in the memory by default (a WebAssembly memory has at
// most 4 GiB and never shrinks): past it, results are plain arrays, copied in and out of calls.
const ARENA_BYTES = 2 ** 31;

/**
 * An input of a kernel call (Gemm.frame): `len` floats of `a` from element `off` (default 0),
 * of which the kernel may read up to `read` (default len).
 */
interface StagedInput {
  a: Float32Array;
  off?: number;
  len: number;
  read?: number;
}

/** Whether an epilogue is input 0 + input 1 (the product plus a bias row, nothing else). */
function isBiasAdd(e: Expr): boolean {
  return e.kind === "binary" && e.op === "add" && e.a.kind === "input" && e.a.index === 0 &&
    e.b.kind === "input" && e.b.index === 1;
}

const isInput = (e: Expr, i: number) => e.kind === "input" && e.index === i;

/**
 * `op(z)` with z the product (input 0) or the product plus a bias row (input 0 + input 1):
 * "bias", "plain", or null when `e` is not of that form.
 */
function unaryOfProduct(e: Expr, op: string): "bias" | "plain" | null {
  if (e.kind !== "unary" || e.op !== op) return null;
  return isInput(e.x, 0) ? "plain" : isBiasAdd(e.x) ? "bias" : null;
}

/**
 * What the SGEMM stores besides the sums (kernels/wasm_gemm.ts GEMM_EPILOGUE): the mode, the
 * bias row or null, and `aux`, an array laid out like the output (at the same offset), written
 * (`gelu`: the derivative) or read (`mulAux`).
 */
interface ProductEpilogue {
  mode: number;
  bias: Float32Array | null;
  aux?: Float32Array;
  /**
   * Transposed A only: filled with the column sums of A as stored ([K, M] → M sums, `sumA`) or
   * of B (the sums of its K rows, N of them, `sumB`), as reduce("sum") over the rows gives them.
   */
  sumA?: Float32Array;
  sumB?: Float32Array;
}

// No epilogue function: the product alone (with column sums requested beside it).
const PLAIN = { mode: GEMM_EPILOGUE.plain, bias: null } as const;

/** A run-time compiled elementwise kernel with the id the workers cache it by. */
interface JitKernel extends SimdKernel {
  readonly id: number;
  /** {@linkcode simdCost} of its DAG. */
  readonly cost: number;
}

/**
 * One call of a {@linkcode JitKernel} over `total` items (4-float vectors when `flat`, else
 * rows of `cols`): the kernel's pointer arguments (inputs, outputs, constants; byte addresses)
 * at item 0 and their byte steps per item, and the work of one item (for the chunk size).
 */
interface JitCall {
  base: number[];
  step: number[];
  total: number;
  flat: boolean;
  n: number;
  cols: number;
  itemWork: number;
  /**
   * More arrays of the same kernel in the same call (elementwiseGroups' groups): each its own
   * base addresses, items and elements, the steps and columns shared; their chunks are claimed
   * after the first array's, by the same threads.
   */
  more?: readonly { base: readonly number[]; total: number; n: number }[];
}

/** A call's arrays (see JitCall.more) and the chunks of each at `chunk` items a chunk. */
function segmentsOf(call: JitCall, chunk: number) {
  const segs = [{ base: call.base, total: call.total, n: call.n }, ...(call.more ?? [])];
  return { segs, chunks: segs.reduce((a, s) => a + Math.ceil(s.total / chunk), 0) };
}

/** The kernels' runtime (SGEMM and the rest): module, shared memory, helper workers. */
class Gemm {
  readonly mr: number;
  readonly fma: boolean;
  readonly threads: number;
  readonly #mem: WebAssembly.Memory;
  readonly #gemmN: (...a: number[]) => void;
  readonly #gemmT: (...a: number[]) => void;
  readonly #packT: (...a: number[]) => void;
  readonly #packN: (...a: number[]) => void;
  /** Per-row max and Σ exp (see kernels/wasm_gemm.ts `lse_rows`). */
  readonly lseRows: (...a: number[]) => void;
  /** Per-column max and Σ exp (cols a multiple of 4). */
  readonly lseCols: (...a: number[]) => void;
  readonly #attnFwd: (...a: number[]) => void;
  readonly #attnBwd: (...a: number[]) => void;
  readonly #lnFwd: (...a: number[]) => void;
  readonly #lnBwd: (...a: number[]) => void;
  readonly #colSum: (...a: number[]) => void;
  readonly #workers: Helper[] = [];
  // Workers an elementwise call returned without waiting for (see runJit).
  #lagging: Int32Array[] = [];
  /** Where the backend's arrays live (regions of the memory). */
  readonly arena: Arena;
  #scratchAt = 0;
  #scratchCap = 0;
  /** Where results are copied out to. */
  readonly pool: ArrayPool;
  // Bytes 0..1023 of the memory: one 64-byte control block per worker (at most 15).
  static readonly BASE = 1024;

  private constructor(
    mr: number,
    fma: boolean,
    module: WebAssembly.Module,
    threads: number,
    pool: ArrayPool,
    arenaBytes: number,
  ) {
    this.mr = mr;
    this.fma = fma;
    this.threads = threads;
    this.pool = pool;
    this.#mem = new WebAssembly.Memory({ initial: 16, maximum: 65536, shared: true });
    this.arena = new Arena(this.#mem, Gemm.BASE / 4, Math.floor(arenaBytes / 4));
    this.arena.beforeReuse = () => this.#settle(true);
    const inst = new WebAssembly.Instance(module, { env: { mem: this.#mem } });
    this.#gemmN = inst.exports.gemm_n as (...a: number[]) => void;
    this.#gemmT = inst.exports.gemm_t as (...a: number[]) => void;
    this.#packT = inst.exports.pack_t as (...a: number[]) => void;
    this.#packN = inst.exports.pack_n as (...a: number[]) => void;
    this.lseRows = inst.exports.lse_rows as (...a: number[]) => void;
    this.lseCols = inst.exports.lse_cols as (...a: number[]) => void;
    this.#attnFwd = inst.exports.attn_fwd as (...a: number[]) => void;
    this.#attnBwd = inst.exports.attn_bwd as (...a: number[]) => void;
    this.#lnFwd = inst.exports.ln_mod_fwd as (...a: number[]) => void;
    this.#lnBwd = inst.exports.ln_mod_bwd as (...a: number[]) => void;
    this.#colSum = inst.exports.col_sum as (...a: number[]) => void;
  }

  static async create(threads: number, pool: ArrayPool, arenaBytes: number): Promise<Gemm> {
    const fmaBytes = decode(GEMM_FMA_WASM.base64) as BufferSource;
    const fma = WebAssembly.validate(fmaBytes);
    const spec = fma ? GEMM_FMA_WASM : GEMM_PLAIN_WASM;
    const module = await WebAssembly.compile(
      fma ? fmaBytes : decode(GEMM_PLAIN_WASM.base64) as BufferSource,
    );
    const g = new Gemm(spec.mr, fma, module, threads, pool, arenaBytes);
    await g.#startWorkers(module, threads - 1);
    return g;
  }

  async #startWorkers(module: WebAssembly.Module, count: number): Promise<void> {
    for (let w = 0; w < count; w++) {
      this.#workers.push(await startWorker(module, this.#mem, w * 64));
    }
  }

  /** Threads that can share a call (this one and the workers). */
  get parts(): number {
    return this.#workers.length + 1;
  }

  /** Stop the workers. */
  close(): void {
    try {
      this.#settle(true);
    } catch {
      // A trapped worker is stopped all the same.
    }
    for (const { stop, ctrl } of this.#workers) {
      Atomics.store(ctrl, 0, 2);
      Atomics.notify(ctrl, 0);
      stop();
    }
    this.#workers.length = 0;
  }

  /** The shared memory (the elementwise kernels run on it too). */
  get memory(): WebAssembly.Memory {
    return this.#mem;
  }

  /**
   * A view of the whole memory, grown first to at least `bytes`, once no worker is still in a
   * call (every kernel call starts here).
   */
  view(bytes: number): Float32Array {
    this.#settle(true);
    this.arena.ensure(Math.ceil(bytes / 4));
    return new Float32Array(this.#mem.buffer);
  }

  /** Wait for any worker an elementwise call left finishing a chunk (see #settle). */
  settle(): void {
    this.#settle(true);
  }

  /** A result array of `n` floats on a region of at least `cap`: in the memory when it fits. */
  out(n: number, cap = n): Float32Array {
    this.#settle(true);
    return this.arena.take(n, cap) ?? this.pool.take(n);
  }

  /**
   * Lay out one kernel call: the element offset of every input (an array in the memory is read
   * where it is; any other is copied into the call's scratch), of every output (`outs`: arrays
   * from {@linkcode Gemm.out}; one outside the memory is written in scratch and copied to it by
   * `finish`), and of `extra` floats of scratch for the kernel. An input's `read` (≥ len) is how
   * far past `off` the kernel may read (the SGEMM's rows past m): the memory is grown to cover it.
   */
  frame(
    ins: readonly StagedInput[],
    outs: readonly Float32Array[],
    extra: number,
  ): { ins: number[]; outs: number[]; scratch: number; finish(): void } {
    this.#settle(true);
    const arena = this.arena, pad = (len: number) => up4(len) + 4;
    const inAt = ins.map(({ a, off = 0 }) => {
      const at = arena.offsetOf(a);
      return at < 0 ? -1 : at + off;
    });
    const outAt = outs.map((a) => arena.offsetOf(a));
    let need = pad(extra);
    ins.forEach((x, j) => {
      if (inAt[j]! < 0) need += pad(x.read ?? x.len);
    });
    outs.forEach((a, j) => {
      if (outAt[j]! < 0) need += pad(a.length);
    });
    let at = this.#scratch(need), end = at + need;
    ins.forEach((x, j) => {
      if (inAt[j]! < 0) {
        inAt[j] = at;
        at += pad(x.read ?? x.len);
      } else end = Math.max(end, inAt[j]! + (x.read ?? x.len) + 4);
    });
    const back: number[] = [];
    outs.forEach((a, j) => {
      if (outAt[j]! < 0) {
        back.push(j);
        outAt[j] = at;
        at += pad(a.length);
      }
    });
    const f = this.view(Math.max(end, arena.top) * 4);
    ins.forEach(({ a, off = 0, len }, j) => {
      if (arena.offsetOf(a) < 0) f.set(a.subarray(off, off + len), inAt[j]!);
    });
    return {
      ins: inAt,
      outs: outAt,
      scratch: at,
      finish: () => {
        const g = new Float32Array(this.#mem.buffer);
        for (const j of back) outs[j]!.set(g.subarray(outAt[j]!, outAt[j]! + outs[j]!.length));
      },
    };
  }

  /** The element offset of a scratch region of at least `n` floats (one, reused by every call). */
  #scratch(n: number): number {
    if (n > this.#scratchCap) {
      if (this.#scratchCap > 0) this.arena.release(this.#scratchAt, this.#scratchCap);
      this.#scratchCap = Math.max(n, Math.ceil(this.#scratchCap * 1.5));
      this.#scratchAt = this.arena.region(this.#scratchCap, true);
    }
    return this.#scratchAt;
  }

  /**
   * out[oo .. oo + m·n) = A·B for one matrix pair (offsets in elements; m, n ≥ 1), f32
   * accumulation, plus `epi.bias` [n] on every row when given (added to each finished sum),
   * then `epi.mode`'s function of the sum (kernels/wasm_gemm.ts GEMM_EPILOGUE) with `epi.aux`
   * read or written from element `oo` as the output is. Written in place when `out` is in the
   * memory, n is a multiple of 8 and `out` has room for the last row block's rows past m (see
   * {@linkcode Gemm.productCap}); else in scratch, then copied. A mode with an aux array needs
   * the output in place, and an aux output in place too ({@linkcode Gemm.auxFits}).
   * The kernel's 13 arguments fill the worker protocol's slots (claimRows passes them
   * through ctrl[3..15]), so the bias, mode and aux travel in a 3-word block in the call's
   * scratch whose address is the last argument.
   */
  product(
    as: Float32Array,
    ao: number,
    bs: Float32Array,
    bo: number,
    g: MatmulGeom,
    out: Float32Array,
    oo: number,
    epi: ProductEpilogue | null = null,
  ): void {
    const bias = epi?.bias ?? null, mode = epi?.mode ?? GEMM_EPILOGUE.plain;
    const sumA = epi?.sumA, sumB = epi?.sumB;
    if ((sumA || sumB) && !g.transA) {
      throw new Error("wasm backend: column sums need the transposed-A kernel");
    }
    const { m, n, k } = g, mr = this.mr;
    const mb = Math.ceil(m / mr), mp = mb * mr, np = Math.ceil(n / GEMM_NR) * GEMM_NR;
    // A as stored (row-major or transposed), B as stored when row-major (read in place by the
    // kernel) or packed into [np/8][k][8] panels in scratch. Rows past m and columns past n read
    // whatever follows (each input's `read` keeps those reads inside the memory) and are dropped.
    const kc = kBlock(k, g.transA);
    // With a transposed A the k blocks keep B's block in L2 and MR columns of A in L1, and B
    // read in place ran as fast as packed (42–49 GFLOP/s against 35–39 with the packing pass,
    // at n = 384…768, k = 3136): pack only where rows 4 kB apart would alias in the caches. (With
    // a vector copy instead of pack_n's scalar one, packing [3136, 128] still ran the dW products
    // 2–10 % slower on 2 threads: the pass runs on one thread before the split.)
    const pack = g.transB || (n >= PACK_N && (!g.transA || n % 1024 === 0));
    const outAt = this.arena.offsetOf(out);
    const direct = outAt >= 0 && np === n && this.arena.capacity(out) >= oo + mp * n;
    const packed = pack ? up4(np * k) + 8 : 0;
    // An aux array is laid out like the output: in place, as the output must then be.
    const aux = mode === GEMM_EPILOGUE.plain ? undefined : epi!.aux;
    if (aux && (!direct || (mode === GEMM_EPILOGUE.gelu && !this.auxFits(g, aux, oo)))) {
      throw new Error("wasm backend: an SGEMM epilogue's output is not in place");
    }
    const fr = this.frame(
      [
        { a: as, off: ao, len: m * k, read: g.transA ? k * m + mr : mp * k },
        { a: bs, off: bo, len: k * n, read: k * n + GEMM_NR },
        // The kernel reads a whole panel's 8 columns of it (np).
        ...(bias ? [{ a: bias, len: n, read: np }] : []),
        // Read rows past m too (the last row block's, dropped).
        ...(mode === GEMM_EPILOGUE.mulAux ? [{ a: aux!, off: oo, len: m * n, read: mp * n }] : []),
      ],
      [],
      // The epilogue block (8 floats, so the f64 sums after it stay 8-byte aligned) and the sums.
      packed + (direct ? 0 : mp * np) + 8 + (sumA ? 2 * mp : 0) + (sumB ? 2 * np : 0) + 2,
    );
    const [A, B] = fr.ins as [number, number];
    const BIAS = bias ? fr.ins[2]! : 0;
    const AUX = mode === GEMM_EPILOGUE.mulAux
      ? fr.ins[bias ? 3 : 2]!
      : aux
      ? this.arena.offsetOf(aux) + oo
      : 0;
    const C = direct ? outAt + oo : fr.scratch + packed;
    // The epilogue block (mode, bias, aux, the two f64 sums' arrays; byte addresses) after the
    // call's other scratch, then the sums.
    const EPI = fr.scratch + packed + (direct ? 0 : mp * np);
    const SA = (EPI + 8 + 1) & ~1, SB = SA + (sumA ? 2 * mp : 0);
    const useEpi = bias !== null || mode !== GEMM_EPILOGUE.plain || !!sumA || !!sumB;
    if (useEpi) {
      new Int32Array(this.#mem.buffer, EPI * 4, 5).set([
        mode,
        BIAS * 4,
        AUX * 4,
        sumA ? SA * 4 : 0,
        sumB ? SB * 4 : 0,
      ]);
    }
    let sBk = n, sBp = GEMM_NR, Bat = B;
    if (pack) {
      // Panels [np/8][k][8]: contiguous for the kernel. A transposed B must be packed; a wide
      // row-major B is too (read in place it costs a new cache line, often a new page, per k).
      sBk = GEMM_NR;
      sBp = GEMM_NR * k;
      Bat = fr.scratch;
      (g.transB ? this.#packT : this.#packN)(B * 4, Bat * 4, n, k);
    }
    const gemm = g.transA ? this.#gemmT : this.#gemmN;
    // Split the row blocks (big products only: waking a worker costs tens of µs).
    const parts = m * n * k < SPLIT_WORK ? 1 : Math.min(this.#workers.length + 1, mb);
    const args = [
      A * 4,
      m,
      Bat * 4,
      sBk,
      sBp,
      C * 4,
      np,
      0,
      mb,
      np / GEMM_NR,
      k,
      kc,
      useEpi ? EPI * 4 : 0,
    ];
    if (parts === 1) gemm(...args);
    else {
      const fn = kernelIndex(g.transA ? "gemm_t" : "gemm_n");
      this.#splitRows(fn, gemm, mb, parts, rowShare(mb, kc < k), args);
    }
    // f64 to f32 by the typed array's conversion: round to nearest even, as f32.demote_f64.
    if (sumA) sumA.set(new Float64Array(this.#mem.buffer, SA * 4, m));
    if (sumB) sumB.set(new Float64Array(this.#mem.buffer, SB * 4, n));
    if (direct) return;
    const f = new Float32Array(this.#mem.buffer);
    if (np === n) out.set(f.subarray(C, C + m * n), oo);
    else for (let i = 0; i < m; i++) out.set(f.subarray(C + i * np, C + i * np + n), oo + i * n);
  }

  /**
   * Whether {@linkcode Gemm.product} can write an output of `g` in place in `out` from element
   * `oo` (in the memory, n a multiple of 8, room for the last row block's rows past m): what an
   * epilogue's aux array (laid out like the output) needs.
   */
  auxFits(g: MatmulGeom, out: Float32Array, oo: number): boolean {
    const mp = Math.ceil(g.m / this.mr) * this.mr;
    return this.arena.offsetOf(out) >= 0 && g.n % GEMM_NR === 0 &&
      this.arena.capacity(out) >= oo + mp * g.n;
  }

  /**
   * Floats a product's output region needs for {@linkcode Gemm.product} to write it in place:
   * each matrix's last row block writes rows past m (into the next matrix's rows, which are
   * written after it, or past the last one).
   */
  productCap(g: MatmulGeom): number {
    const mp = Math.ceil(g.m / this.mr) * this.mr;
    return (g.batch - 1) * g.m * g.n + mp * g.n;
  }

  /**
   * Run a compiled elementwise kernel over a call's items on `parts` threads: this one alone,
   * or in chunks of ~EW_CHUNK_WORK that this thread and `parts − 1` workers claim until none
   * is left (drainChunks). `scratch` (an element offset) is free memory for the chunk block
   * and the module's bytes ({@linkcode Gemm.jitScratch} floats). Returns once every chunk is
   * done, possibly before every worker is (see #settle). Without `redo` (outputs written over
   * inputs, where running a chunk twice would read its own results) this thread does not redo
   * chunks a worker holds: it waits for the workers instead.
   */
  runJit(k: JitKernel, call: JitCall, parts: number, scratch: number, redo = true): void {
    const { step, flat, cols } = call;
    if (parts <= 1) {
      for (const { base, total, n } of segmentsOf(call, 1).segs) {
        k.run(...base, flat ? 1 : total, flat ? n : cols);
      }
      return;
    }
    // Chunks of ~EW_CHUNK_WORK, at least one item; the block, then the module's bytes.
    const np = step.length, chunk = Math.max(1, Math.ceil(EW_CHUNK_WORK / call.itemWork));
    const { segs, chunks } = segmentsOf(call, chunk);
    const head = 7 + np + segs.length * (3 + np);
    const words = head + chunks, code = scratch + up4(words);
    const f = new Float32Array(this.#mem.buffer);
    new Uint8Array(f.buffer, code * 4, k.bytes.length).set(k.bytes);
    const blk = new Int32Array(f.buffer, scratch * 4, words);
    blk.set([0, np, segs.length, chunk, flat ? 1 : 0, cols, chunks, ...step]);
    let first = 0, at = 7 + np;
    for (const { base, total, n } of segs) {
      blk.set([first, total, n, ...base], at);
      at += 3 + np;
      first += Math.ceil(total / chunk);
    }
    blk.fill(0, head);
    const busy: Int32Array[] = [];
    for (let w = 0; w < parts - 1; w++) {
      const { ctrl } = this.#workers[w]!;
      ctrl.set([kernelIndex("elementwise"), k.id, code * 4, k.bytes.length, scratch * 4], 1);
      Atomics.store(ctrl, 0, 1);
      Atomics.notify(ctrl, 0);
      busy.push(ctrl);
    }
    let err: unknown = null;
    try {
      drainChunks(k.run, blk, false);
      if (redo) drainChunks(k.run, blk, true);
    } catch (e) {
      err = e; // rethrown once the workers are idle again (they share this call's memory)
    }
    if (!redo) this.#join(busy, kernelIndex("elementwise"), err, false);
    else if (err === null) {
      // Every chunk is done: a worker still in one is rewriting the same bits, and the next
      // call waits for it (view) before it touches the memory. Under load (~8 here, on 2
      // cores) a worker paused mid-chunk otherwise held calls up by a scheduler time slice.
      for (const ctrl of busy) {
        if (Atomics.compareExchange(ctrl, 0, 1, 0) !== 1) this.#lagging.push(ctrl);
      }
      this.#settle(false);
    } else this.#join(busy, kernelIndex("elementwise"), err, true);
  }

  /** Scratch floats {@linkcode Gemm.runJit} needs for a call on `parts` threads. */
  static jitScratch(k: JitKernel, call: JitCall, parts: number): number {
    if (parts <= 1) return 0;
    const chunk = Math.max(1, Math.ceil(EW_CHUNK_WORK / call.itemWork)), np = call.step.length;
    const { segs, chunks } = segmentsOf(call, chunk);
    return up4(7 + np + segs.length * (3 + np) + chunks) + up4(Math.ceil(k.bytes.length / 4));
  }

  /**
   * Wait for workers that an elementwise call left finishing a chunk (all of them with `wait`,
   * else only those that trapped, which raise), before the memory is used again.
   */
  #settle(wait: boolean): void {
    if (this.#lagging.length === 0) return;
    const still: Int32Array[] = [];
    const done = this.#lagging.filter((ctrl) => {
      const s = Atomics.load(ctrl, 0);
      if (!wait && s === 4) still.push(ctrl);
      return wait || s !== 4;
    });
    this.#lagging = still;
    this.#join(done, kernelIndex("elementwise"), null, false);
  }

  /**
   * Wait until the workers in `busy` are idle (taking back, when `takeBack`, calls they have
   * not started), then rethrow `err` or raise if a worker trapped.
   */
  #join(busy: readonly Int32Array[], fn: number, err: unknown, takeBack: boolean): void {
    let failed = false;
    for (const ctrl of busy) {
      if (takeBack && Atomics.compareExchange(ctrl, 0, 1, 0) === 1) continue;
      for (let s = Atomics.load(ctrl, 0); s === 1 || s === 4; s = Atomics.load(ctrl, 0)) {
        Atomics.wait(ctrl, 0, s);
      }
      if (Atomics.load(ctrl, 0) === 3) {
        failed = true;
        Atomics.store(ctrl, 0, 0);
      }
    }
    if (err !== null) throw err;
    if (failed) {
      throw new Error(`wasm backend: a worker trapped in ${KERNELS[fn]} (a bug: please report it)`);
    }
  }

  /**
   * Run kernel `fn` (index in KERNELS; `local` is this thread's instance of it) over items
   * [0, total) in `parts` shares: the workers take the first shares, this thread the last;
   * `args(lo, hi, part)` gives a share's arguments (`part` < parts picks per-thread scratch).
   * Waits for every worker even when this thread's share throws, and raises if one trapped.
   */
  #split(
    fn: number,
    local: (...a: number[]) => void,
    total: number,
    parts: number,
    args: (lo: number, hi: number, part: number) => readonly number[],
  ): void {
    const per = Math.ceil(total / parts);
    const busy: Int32Array[] = [];
    for (let w = 0; w < parts - 1 && w * per < total; w++) {
      const { ctrl } = this.#workers[w]!;
      ctrl.set([fn, ...args(w * per, Math.min(total, (w + 1) * per), w)], 1);
      Atomics.store(ctrl, 0, 1);
      Atomics.notify(ctrl, 0);
      busy.push(ctrl);
    }
    const mine = Math.min(total, busy.length * per);
    let err: unknown = null;
    try {
      local(...args(mine, total, busy.length));
    } catch (e) {
      err = e; // rethrown once the workers are idle again (they share this call's memory)
    }
    this.#join(busy, fn, err, false);
  }

  /**
   * Run SGEMM kernel `fn` (`local` this thread's instance) over `total` row blocks on `parts`
   * threads, each claiming shares of at least `min` blocks until none is left (claimRows; this
   * thread from the back). `args` are the kernel's 13 arguments (its row range is set per share).
   */
  #splitRows(
    fn: number,
    local: (...a: number[]) => void,
    total: number,
    parts: number,
    min: number,
    args: readonly number[],
  ): void {
    const a = [...args];
    if (total > 0xffff) {
      // The claim counts are 16 bits: more row blocks (393k rows) split in fixed shares.
      this.#split(fn, local, total, parts, (lo, hi) => a.with(7, lo).with(8, hi));
      return;
    }
    a[7] = Math.max(1, min);
    a[8] = total;
    const claim = new Int32Array(this.#mem.buffer, CLAIM_AT, 1);
    Atomics.store(claim, 0, 0);
    const busy: Int32Array[] = [];
    for (let w = 0; w < parts - 1; w++) {
      const { ctrl } = this.#workers[w]!;
      ctrl.set([kernelIndex("gemm_rows"), fn + 256 * parts, ...a], 1);
      Atomics.store(ctrl, 0, 1);
      Atomics.notify(ctrl, 0);
      busy.push(ctrl);
    }
    let err: unknown = null;
    try {
      claimRows(local, a, claim, parts, true);
    } catch (e) {
      err = e; // rethrown once the workers are idle again (they share this call's memory)
    }
    this.#join(busy, fn, err, false);
  }

  /**
   * Self-attention forward (kernels/wasm_gemm.ts `attn_fwd`) over qkv [b, n, 3, heads, d]
   * (d a multiple of 4, n ≥ 1): o [b, n, heads·d] and lse [b·heads·n], the (batch, head) pairs
   * split across the threads.
   */
  attention(
    x: Float32Array,
    b: number,
    n: number,
    heads: number,
    d: number,
    scale: number,
  ): [Float32Array, Float32Array] {
    const hs = heads * d, ts = 3 * hs, pairs = b * heads, np = up4(n);
    const scr = up4((2 * d + 2 * ATTN_R) * np);
    // About 2·n²·d multiply-adds a pair (scores, then P·V), plus n² exps.
    const parts = 2 * pairs * n * n * d < SPLIT_WORK
      ? 1
      : Math.min(this.#workers.length + 1, pairs);
    const o = this.out(b * n * hs);
    const fr = this.frame([{ a: x, len: b * n * ts }], [o], 2 * up4(pairs * n) + parts * scr);
    const [Q] = fr.ins as [number], [O] = fr.outs as [number];
    const M = fr.scratch, L = M + up4(pairs * n), S = L + up4(pairs * n);
    const sc = f32Bits(scale);
    this.#split(kernelIndex("attn_fwd"), this.#attnFwd, pairs, parts, (lo, hi, w) => [
      Q * 4,
      O * 4,
      M * 4,
      L * 4,
      n,
      heads,
      d,
      sc,
      lo,
      hi,
      (S + w * scr) * 4,
    ]);
    fr.finish();
    const lse = this.out(pairs * n), f = new Float32Array(this.#mem.buffer);
    // lse = m + log l here (pairs·n logarithms, not pairs·n²), in f64 then rounded, as the CPU
    // backend's; a NaN max (a NaN score) makes it NaN.
    for (let k = 0; k < lse.length; k++) lse[k] = f[M + k]! + Math.log(f[L + k]!);
    return [o, lse];
  }

  /**
   * Self-attention backward (kernels/wasm_gemm.ts `attn_bwd`): dqkv [b, n, 3, heads, d] from
   * qkv, o, lse and dO, the (batch, head) pairs split across the threads. Each pair writes its
   * own slice of dqkv, so the shares need no reduction.
   */
  attentionBackward(
    x: Float32Array,
    o: Float32Array,
    lse: Float32Array,
    dO: Float32Array,
    b: number,
    n: number,
    heads: number,
    d: number,
    scale: number,
  ): Float32Array {
    const hs = heads * d, ts = 3 * hs, pairs = b * heads, np = up4(n);
    // Query rows per block: P, dS and dSᵀ for rb rows stay in scratch (3·rb·np floats), whatever n.
    const rb = Math.min(ATTN_ROW_BLOCK, n);
    const scr = up4((4 * d + 3 * rb) * np + rb);
    // About 5·n²·d multiply-adds a pair (scores, dO·Vᵀ, dQ, dK, dV).
    const parts = 5 * pairs * n * n * d < SPLIT_WORK
      ? 1
      : Math.min(this.#workers.length + 1, pairs);
    const dq = this.out(b * n * ts);
    const fr = this.frame(
      [
        { a: x, len: b * n * ts },
        { a: o, len: b * n * hs },
        { a: lse, len: pairs * n },
        { a: dO, len: b * n * hs },
      ],
      [dq],
      parts * scr,
    );
    const [Q, O, LS, G] = fr.ins as [number, number, number, number];
    const [DQ] = fr.outs as [number], S = fr.scratch;
    const sc = f32Bits(scale);
    this.#split(kernelIndex("attn_bwd"), this.#attnBwd, pairs, parts, (lo, hi, w) => [
      Q * 4,
      O * 4,
      LS * 4,
      G * 4,
      DQ * 4,
      n,
      heads,
      d,
      sc,
      lo,
      hi,
      (S + w * scr) * 4,
      rb,
    ]);
    fr.finish();
    return dq;
  }

  /**
   * Sums over the middle axis of x [outer, red, inner] (kernels/wasm_gemm.ts `col_sum`: f64 in
   * order, the CPU backend's bits), the columns split across the threads in blocks of 16.
   */
  colSum(x: Float32Array, outer: number, red: number, inner: number): Float32Array {
    const o = this.out(outer * inner);
    const fr = this.frame([{ a: x, len: outer * red * inner }], [o], 0);
    const [X] = fr.ins as [number], [O] = fr.outs as [number];
    const blocks = Math.ceil(inner / 16);
    // Memory-bound (one f64 add a float): split only big sums.
    const parts = outer * red * inner < COL_SUM_SPLIT
      ? 1
      : Math.min(this.#workers.length + 1, blocks);
    this.#split(kernelIndex("col_sum"), this.#colSum, blocks, parts, (lo, hi) => [
      X * 4,
      O * 4,
      outer,
      red,
      inner,
      lo * 16,
      Math.min(inner, hi * 16),
    ]);
    fr.finish();
    return o;
  }

  /**
   * `lse_rows` (per-row max and Σ exp; element offsets) with the rows split across the
   * threads: each row's statistics are computed as on one thread, so the same bits.
   */
  lseRowsSplit(X: number, V: number, M: number, S: number, rows: number, cols: number): void {
    const parts = rows * cols < LSE_SPLIT ? 1 : Math.min(this.#workers.length + 1, rows);
    this.#split(kernelIndex("lse_rows"), this.lseRows, rows, parts, (lo, hi) => [
      (X + lo * cols) * 4,
      V * 4,
      (M + lo) * 4,
      (S + lo) * 4,
      hi - lo,
      cols,
    ]);
  }

  /**
   * `lse_cols` (per-column max and Σ exp; element offsets) with the columns split across the
   * threads in shares of whole 4-column vectors: each column as on one thread, the same bits.
   */
  lseColsSplit(X: number, V: number, M: number, S: number, rows: number, cols: number): void {
    const vecs = Math.ceil(cols / 4);
    const parts = rows * cols < LSE_SPLIT ? 1 : Math.min(this.#workers.length + 1, vecs);
    this.#split(kernelIndex("lse_cols"), this.lseCols, vecs, parts, (lo, hi) => [
      (X + 4 * lo) * 4,
      V * 4,
      (M + 4 * lo) * 4,
      (S + 4 * lo) * 4,
      rows,
      Math.min(cols, 4 * hi) - 4 * lo,
      cols,
    ]);
  }

  /** Threads for a LayerNorm + modulate call over n elements of b samples (split by sample). */
  #lnParts(n: number, b: number): number {
    // ~8 flops an element a pass: calls under EW_SPLIT_WORK stay on this thread, as
    // elementwise calls do (waking a worker costs tens of µs).
    return n * LN_COST < EW_SPLIT_WORK ? 1 : Math.min(this.#workers.length + 1, b);
  }

  /**
   * LayerNorm + AdaLN modulation forward (kernels/wasm_gemm.ts `ln_mod_fwd`) over x [b, t, d]
   * (d a multiple of 4): y [b, t, d] and stats [b·t, 2], the samples split across the threads.
   */
  layerNormModulate(
    x: Float32Array,
    sh: Float32Array,
    sc: Float32Array,
    b: number,
    t: number,
    d: number,
    eps: number,
  ): [Float32Array, Float32Array] {
    const rows = b * t, n = rows * d;
    const y = this.out(n), st = this.out(2 * rows);
    const fr = this.frame(
      [{ a: x, len: n }, { a: sh, len: b * d }, { a: sc, len: b * d }],
      [y, st],
      0,
    );
    const [X, SH, SC] = fr.ins as [number, number, number];
    const [Y, ST] = fr.outs as [number, number];
    const e = f32Bits(eps);
    this.#split(kernelIndex("ln_mod_fwd"), this.#lnFwd, b, this.#lnParts(n, b), (lo, hi) => [
      X * 4,
      SH * 4,
      SC * 4,
      Y * 4,
      ST * 4,
      t,
      d,
      e,
      lo,
      hi,
    ]);
    fr.finish();
    return [y, st];
  }

  /**
   * LayerNorm + AdaLN modulation backward (kernels/wasm_gemm.ts `ln_mod_bwd`): dx [b, t, d]
   * (dx + acc with `acc`), dshift and dscale [b, d]; each thread's samples own their rows of
   * dshift and dscale.
   */
  layerNormModulateBackward(
    x: Float32Array,
    sc: Float32Array,
    st: Float32Array,
    dy: Float32Array,
    b: number,
    t: number,
    d: number,
    acc: Float32Array | null = null,
  ): [Float32Array, Float32Array, Float32Array] {
    const rows = b * t, n = rows * d, p = b * d;
    const dx = this.out(n), dsh = this.out(p), dsc = this.out(p);
    const fr = this.frame(
      [
        { a: x, len: n },
        { a: sc, len: p },
        { a: st, len: 2 * rows },
        { a: dy, len: n },
        ...(acc ? [{ a: acc, len: n }] : []),
      ],
      [dx, dsh, dsc],
      0,
    );
    const [X, SC, ST, G, ACC = 0] = fr.ins as [number, number, number, number, number?];
    const [DX, DSH, DSC] = fr.outs as [number, number, number];
    this.#split(kernelIndex("ln_mod_bwd"), this.#lnBwd, b, this.#lnParts(2 * n, b), (lo, hi) => [
      X * 4,
      SC * 4,
      ST * 4,
      G * 4,
      DX * 4,
      DSH * 4,
      DSC * 4,
      t,
      d,
      lo,
      hi,
      // Always passed: a worker calls with its control block's 14 words, stale past a call's own.
      ACC * 4,
    ]);
    fr.finish();
    return [dx, dsh, dsc];
  }
}

/** Options of {@linkcode createWasmBackend}. */
export interface WasmBackendOptions {
  /**
   * Threads for matmul, attention and big elementwise calls (this one plus workers); default:
   * the logical CPUs, at most 8.
   */
  threads?: number;
  /**
   * Elementwise calls (and random streams) with less work than this stay on the calling
   * thread. Work is elements times a per-element cost beyond memory traffic: ~1 per cheap
   * vector op, 16 per exp-based one (tanh, sigmoid, GELU …), 128 per normal, minus 8 (the loads
   * and stores; a DAG of a few adds never splits). Default 2^20 (GELU over ~100k elements,
   * ~0.4 ms of one thread); 0 splits every call of more than one 4-float vector (or row).
   */
  elementwiseSplitWork?: number;
  /**
   * Bytes of the backend's arrays kept in its WebAssembly memory, where its kernels read and
   * write them in place (default 2 GiB; the memory never shrinks, and has at most 4 GiB).
   * Arrays past it are plain ones, copied into the memory and out for each kernel call.
   */
  arenaBytes?: number;
}

/**
 * The `wasm` backend (see the module doc). Create it with {@linkcode createWasmBackend}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createWasmBackend } from "./wasm.ts";
 * const be = await createWasmBackend({ threads: 1 });
 * const a = be.upload(new Float32Array([1, 2, 3, 4])), b = be.upload(new Float32Array([5, 6, 7, 8]));
 * const c = be.matmul(a, b, { batch: 1, m: 2, n: 2, k: 2, transA: false, transB: false, aBatchStride: 4, bBatchStride: 4 });
 * assert.deepEqual([...be.readSync(c)], [19, 22, 43, 50]);
 * be.close();
 * ```
 */
export class WasmBackend extends CpuBackend {
  override readonly name = "wasm" as const;
  override readonly description: string;
  readonly #gemm: Gemm;
  readonly #kernels = new Map<string, Kernel>();
  readonly #simdKernels = new Map<string, JitKernel>();
  readonly #randomKernels = new Map<RandomKind, JitKernel>();
  readonly #splitWork: number;

  private constructor(gemm: Gemm, splitWork: number) {
    super();
    this.#gemm = gemm;
    this.#splitWork = splitWork;
    this.description = `wasm (WebAssembly SIMD matmul${
      gemm.fma ? " with relaxed multiply-add" : ""
    }, ${gemm.threads} thread${
      gemm.threads > 1 ? "s" : ""
    }; elementwise as compiled SIMD kernels, big ones split across the threads)`;
  }

  /** Create the backend (see {@linkcode createWasmBackend}). */
  static async create(
    threads: number,
    splitWork = EW_SPLIT_WORK,
    arenaBytes = ARENA_BYTES,
  ): Promise<WasmBackend> {
    const pool = new ArrayPool(POOL_MIN, POOL_FLOOR);
    const be = new WasmBackend(await Gemm.create(threads, pool, arenaBytes), splitWork);
    pool.live = () => be.liveBytes();
    return be;
  }

  /** Stop the workers (the backend stays usable on one thread) and drop the kept arrays. */
  close(): void {
    this.#gemm.close();
    this.#gemm.pool.clear();
  }

  // New arrays of these sizes go in the memory too, so kernels read them where they are.
  override upload(data: Float32Array): Storage {
    if (data.length < ARENA_MIN) return super.upload(data);
    const o = this.#gemm.out(data.length);
    o.set(data);
    return this.wrap(o);
  }
  override alloc(size: number): Storage {
    return size < ARENA_MIN ? super.alloc(size) : this.fill(size, 0);
  }
  override fill(size: number, value: number): Storage {
    if (size < ARENA_MIN) return super.fill(size, value);
    return this.wrap(this.#gemm.out(size).fill(value));
  }

  /**
   * Release `s`: its region of the memory goes back to the arena (or its plain array to the
   * ArrayPool) for a later result.
   */
  override free(s: Storage): void {
    const a = d(s);
    super.free(s);
    // Recycled only when this call released it (not a second free of the same storage).
    if (d(s) !== a && !this.#gemm.arena.give(a)) this.#gemm.pool.give(a);
  }

  override elementwise(
    outputs: readonly Expr[],
    inputs: readonly Storage[],
    inputStrides: readonly (readonly number[])[],
    outShape: readonly number[],
  ): Storage[] {
    const n = outShape.reduce((a, b) => a * b, 1);
    const arrays = inputs.map(d);
    const planned = plan(arrays, inputStrides, outShape);
    const { rows, cols } = planned;
    // Grouped rows run as one kernel call per group (#simd) when the call is not split across
    // threads and its ops have vector forms; else they are copied like any other view.
    const grouped = n > 0 && planned.group > 0 && simdSupports(outputs) && cols % 4 === 0 &&
      n * Math.max(0, simdCost(outputs) - EW_MEMORY_COST) < this.#splitWork;
    const access = planned.access.map((a) => (a === "group" && !grouped ? "copy" : a));
    // Inputs read through any other view are copied contiguous first, as the CPU backend does.
    const temps: Float32Array[] = [];
    const ins = arrays.map((src, j) => {
      if (access[j] !== "copy") return src;
      const o = this.#gemm.out(n);
      stridedCopy(o, 0, stridesOf(outShape), src, 0, inputStrides[j]!, outShape);
      temps.push(o);
      return o;
    });
    const acc = access.map((a) => (a === "copy" ? "dense" : a));
    try {
      const simd = this.#simd(outputs, ins, acc, n, rows, cols, grouped ? planned.group : 0);
      if (simd) return simd.map((o) => this.wrap(o));
      if (grouped) throw new Error("wasm backend: a grouped call left the SIMD path (a bug)");
      const low = lower(outputs, acc as SimdAccess[]);
      let kernel = this.#kernels.get(low.key);
      if (!kernel) this.#kernels.set(low.key, kernel = low.build());
      const outs = outputs.map(() => this.#gemm.out(n)); // every element is written
      kernel(low.fns, Float64Array.from(low.consts), ins, outs, rows, cols);
      return outs.map((o) => this.wrap(o));
    } finally {
      for (const t of temps) if (!this.#gemm.arena.give(t)) this.#gemm.pool.give(t);
    }
  }

  /** The compiled SIMD kernel of the expressions over inputs read as `access` (cached). */
  #jitKernel(
    outputs: readonly Expr[],
    access: readonly SimdAccess[],
  ): { kernel: JitKernel; consts: number[] } {
    const { key, consts } = simdKey(outputs, access);
    let kernel = this.#simdKernels.get(key);
    if (!kernel) {
      const k = compileSimd(outputs, access, access.length, this.#gemm.memory, this.#gemm.fma);
      kernel = { ...k, id: this.#simdKernels.size, cost: simdCost(outputs) };
      this.#simdKernels.set(key, kernel);
    }
    return { kernel, consts };
  }

  /**
   * The expressions as one SIMD kernel over the shared memory (inputs read where they are in
   * it, or copied in; results written where their arrays are: ~0.3 ns an element against the
   * JavaScript loop's Math.exp at ~13), or null when an op has no vector form or a per-row/
   * column input meets rows of a width that is not a multiple of 4. Big calls are split across
   * the threads in chunks: of whole vectors for a flat kernel (dense and scalar inputs), of
   * rows for a per-row/column one. With "group" inputs (rows of `group` rows each read one of
   * their rows), the kernel treats them as rows and runs once per group on this thread.
   */
  #simd(
    outputs: readonly Expr[],
    ins: readonly Float32Array[],
    accessIn: readonly (SimdAccess | "group")[],
    n: number,
    rows: number,
    cols: number,
    group = 0,
    into?: readonly (Float32Array | undefined)[],
  ): Float32Array[] | null {
    if (n === 0 || !simdSupports(outputs)) return null;
    const access = accessIn.map((a) => (a === "group" ? "row" : a));
    const flat = access.every((a) => a === "dense" || a === "scalar");
    if (!flat && cols % 4 !== 0) return null;
    const { kernel, consts } = this.#jitKernel(outputs, access);
    // Of an input, only what the kernel reads: n values, one, a row's cols, a column's rows,
    // a row per group.
    const need = (a: SimdAccess | "group") =>
      a === "dense"
        ? n
        : a === "scalar"
        ? 1
        : a === "row"
        ? cols
        : a === "group"
        ? (rows / group) * cols
        : rows;
    // An output given in `into` is written there (possibly over one of the inputs: a flat
    // kernel reads every input of a vector before it stores any output).
    const outs = outputs.map((_, t) => into?.[t] ?? this.#gemm.out(n));
    // Items: whole vectors of a flat kernel (a chunk's last vector never spills into the next
    // chunk's), rows of a per-row/column one; small calls on this thread (see EW_SPLIT_WORK).
    const total = flat ? (n + 3) >> 2 : rows, cost = kernel.cost;
    const work = n * Math.max(0, cost - EW_MEMORY_COST);
    const parts = group > 0 || work < this.#splitWork ? 1 : Math.min(this.#gemm.parts, total);
    const width = flat ? 4 : cols; // elements per item
    const call: JitCall = {
      base: [],
      step: [
        ...access.map((a) => (a === "dense" ? width * 4 : a === "col" ? 4 : 0)),
        ...outs.map(() => width * 4),
        0,
      ],
      total,
      flat,
      n,
      cols,
      itemWork: width * cost,
    };
    const fr = this.#gemm.frame(
      ins.map((a, j) => {
        const len = need(accessIn[j]!);
        // A dense vector kernel reads whole vectors: the last one may pass the end.
        return { a, len, read: up4(len) };
      }),
      outs,
      up4(consts.length) + 4 + Gemm.jitScratch(kernel, call, parts),
    );
    const constAt = fr.scratch;
    const f = new Float32Array(this.#gemm.memory.buffer);
    f.set(consts, constAt);
    call.base = [...fr.ins, ...fr.outs, constAt].map((p) => p * 4);
    if (group > 0) {
      // Per group: dense inputs and outputs advance `group` rows, a group's row one row, a
      // per-row (col) input `group` values; rows and scalars stay.
      const gs = [
        ...accessIn.map((a) =>
          a === "dense" ? group * cols * 4 : a === "group" ? cols * 4 : a === "col" ? group * 4 : 0
        ),
        ...outs.map(() => group * cols * 4),
        0,
      ];
      const args = call.base.slice();
      args.push(group, cols);
      for (let g = 0; g < rows / group; g++) {
        for (let i = 0; i < gs.length; i++) args[i] = call.base[i]! + g * gs[i]!;
        kernel.run(...args);
      }
    } else {
      this.#gemm.runJit(kernel, call, parts, constAt + up4(consts.length) + 4, into === undefined);
    }
    fr.finish();
    return outs;
  }

  override logSumExpAdd(
    x: Storage,
    v: Storage,
    rows: number,
    cols: number,
    axis: 0 | 1,
    scale = 1,
    shift = 0,
  ): Storage {
    // Two SIMD passes per line (max, then Σ exp(t − max)) in WebAssembly; the host takes
    // the rows-or-cols logarithms. Sums are f32 here (f64 in the CPU backend): Sinkhorn's
    // potentials agree to ~1e-6 relative.
    const outN = axis === 1 ? rows : cols;
    const cp = axis === 1 ? cols : (cols + 3) & ~3;
    const xs = d(x), vs = d(v);
    const fr = this.#gemm.frame(
      [{ a: xs, len: rows * cols, read: rows * cols + cp }, { a: vs, len: vs.length }],
      [],
      2 * (cp + rows + 4),
    );
    const [X, V] = fr.ins as [number, number];
    const M = fr.scratch, S = M + cp + rows + 4;
    if (axis === 1) this.#gemm.lseRowsSplit(X, V, M, S, rows, cols);
    else this.#gemm.lseColsSplit(X, V, M, S, rows, cols);
    const f = new Float32Array(this.#gemm.memory.buffer);
    const o = new Float32Array(outN);
    const sc = Math.fround(scale), sh = Math.fround(shift);
    for (let k = 0; k < outN; k++) {
      const m = f[M + k]!, s = f[S + k]!;
      const r = Number.isNaN(m) ? NaN : m === Infinity || m === -Infinity ? m : m + Math.log(s);
      o[k] = Math.fround(sc * Math.fround(r)) + sh;
    }
    return this.wrap(o);
  }

  override attention(
    qkv: Storage,
    b: number,
    n: number,
    heads: number,
    hd: number,
    scale: number,
  ): [Storage, Storage] {
    // f32x4 over the head width: other widths (and empty inputs) take the CPU backend's loops.
    if (hd % 4 !== 0 || b * n * heads * hd === 0) {
      return super.attention(qkv, b, n, heads, hd, scale);
    }
    const [o, lse] = this.#gemm.attention(d(qkv), b, n, heads, hd, scale);
    return [this.wrap(o), this.wrap(lse)];
  }

  override attentionBackward(
    qkv: Storage,
    o: Storage,
    lse: Storage,
    dO: Storage,
    b: number,
    n: number,
    heads: number,
    hd: number,
    scale: number,
  ): Storage {
    if (hd % 4 !== 0 || b * n * heads * hd === 0) {
      return super.attentionBackward(qkv, o, lse, dO, b, n, heads, hd, scale);
    }
    return this.wrap(
      this.#gemm.attentionBackward(d(qkv), d(o), d(lse), d(dO), b, n, heads, hd, scale),
    );
  }

  override layerNormModulate(
    x: Storage,
    shift: Storage,
    scale: Storage,
    b: number,
    t: number,
    w: number,
    eps: number,
  ): [Storage, Storage] {
    // f32x4 over a row: other widths (and empty inputs) take the CPU backend's loops.
    if (w % 4 !== 0 || b * t * w === 0) {
      return super.layerNormModulate(x, shift, scale, b, t, w, eps);
    }
    const [y, st] = this.#gemm.layerNormModulate(d(x), d(shift), d(scale), b, t, w, eps);
    return [this.wrap(y), this.wrap(st)];
  }

  override layerNormModulateBackward(
    x: Storage,
    scale: Storage,
    stats: Storage,
    dy: Storage,
    b: number,
    t: number,
    w: number,
    acc?: Storage,
  ): [Storage, Storage, Storage] {
    if (w % 4 !== 0 || b * t * w === 0) {
      return super.layerNormModulateBackward(x, scale, stats, dy, b, t, w, acc);
    }
    const [dx, dsh, dsc] = this.#gemm.layerNormModulateBackward(
      d(x),
      d(scale),
      d(stats),
      d(dy),
      b,
      t,
      w,
      acc ? d(acc) : null,
    );
    return [this.wrap(dx), this.wrap(dsh), this.wrap(dsc)];
  }

  /**
   * The gated residual's backward as one compiled kernel (wasm_jit.ts compileGatedBackward, one
   * per token count): da = g·dy and the token sums dg in one pass over a and dy, samples split
   * across the threads in chunks (runJit) only when elementwise calls of its cost would be.
   * Each dg element is summed by one thread in token order: the same bits on any number of
   * threads. Widths that are not a multiple of 4 (and empty calls) take the CPU backend's loops.
   */
  override gatedResidualBackward(
    g: Storage,
    a: Storage,
    dy: Storage,
    b: number,
    t: number,
    w: number,
  ): [Storage, Storage] {
    if (w % 4 !== 0 || b * t * w === 0) return super.gatedResidualBackward(g, a, dy, b, t, w);
    const key = `gatedResidualBackward;${t}`;
    let kernel = this.#simdKernels.get(key);
    if (!kernel) {
      const k = compileGatedBackward(t, this.#gemm.memory);
      // cost: per element 2 loads, a store, 2 multiplies and an add.
      kernel = { ...k, id: this.#simdKernels.size, cost: 6 };
      this.#simdKernels.set(key, kernel);
    }
    const n = b * t * w;
    const da = this.#gemm.out(n), dg = this.#gemm.out(b * w);
    const call: JitCall = {
      base: [],
      step: [4 * w, 4 * t * w, 4 * t * w, 4 * t * w, 4 * w, 0],
      total: b,
      flat: false,
      n,
      cols: w,
      itemWork: t * w * kernel.cost,
    };
    // Memory-bound, so not split (as elementwise calls; see EW_MEMORY_COST): at [64, 49, 128]
    // (bench/gated_ab.ts) two threads took the same wall time as one at twice the CPU time.
    const work = n * Math.max(0, kernel.cost - EW_MEMORY_COST);
    const parts = work < this.#splitWork ? 1 : Math.min(this.#gemm.parts, b);
    const fr = this.#gemm.frame(
      [{ a: d(g), len: b * w }, { a: d(a), len: n }, { a: d(dy), len: n }],
      [da, dg],
      4 + Gemm.jitScratch(kernel, call, parts),
    );
    call.base = [...fr.ins, ...fr.outs, fr.scratch].map((p) => p * 4);
    this.#gemm.runJit(kernel, call, parts, fr.scratch + 4);
    fr.finish();
    return [this.wrap(da), this.wrap(dg)];
  }

  /**
   * All the groups as one SIMD call (a multi-tensor apply: one kernel over every group's
   * arrays, big calls split in chunks across the threads, runJit), in-place outputs written
   * where their inputs are (an optimizer's p, m and v: the CPU backend's way, a new output
   * copied back, cost three extra passes over the parameters a step); the CPU backend's groups
   * when an op has no vector form.
   */
  override elementwiseGroups(
    outputs: readonly Expr[],
    groups: readonly ElementwiseGroup[],
    scalars: readonly Storage[],
    inPlace?: readonly number[],
  ): Storage[][] {
    // In-place outputs may be written by JavaScript: no worker may still be writing one.
    this.#gemm.settle();
    const arena = this.#gemm.arena, vector = simdSupports(outputs);
    const into = (g: ElementwiseGroup, t: number) => {
      const i = inPlace?.[t] ?? -1;
      return i < 0 ? undefined : d(g.inputs[i]!);
    };
    const fits = (g: ElementwiseGroup) =>
      vector && g.size > 0 && g.inputs.every((x) => d(x).length === g.size) &&
      // In place over whole arrays of the memory, whose regions hold the last vector's padding,
      // or over plain ones (e.g. a bias under ARENA_MIN floats), which the call copies into its
      // scratch and back (frame).
      outputs.every((_, t) => {
        const a = into(g, t);
        return a === undefined || arena.offsetOf(a) < 0 || arena.capacity(a) >= up4(g.size);
      });
    const res: Storage[][] = new Array(groups.length);
    const mine: number[] = [];
    groups.forEach((g, i) => {
      if (fits(g)) mine.push(i);
      else res[i] = super.elementwiseGroups(outputs, [g], scalars, inPlace)[0]!;
    });
    if (mine.length === 0) return res;
    const sc = scalars.map(d), nIn = groups[mine[0]!]!.inputs.length;
    const access: SimdAccess[] = [
      ...Array.from({ length: nIn }, () => "dense" as const),
      ...sc.map(() => "scalar" as const),
    ];
    const { kernel, consts } = this.#jitKernel(outputs, access);
    const outs = mine.map((i) => {
      const g = groups[i]!;
      return outputs.map((_, t) => into(g, t) ?? this.#gemm.out(g.size));
    });
    // One call for every group (a kernel call, a frame and a split decision a group before:
    // Adam over the bench DiT's 51 groups took 2.3–4.1 ms a step, now 1.3–1.8; its 11 biases
    // of 128 floats went the CPU backend's way, ~33 µs each). Big calls split, the threads
    // claiming chunks across the groups; memory-bound ones do not (see EW_STREAM_COST).
    const total = mine.reduce((a, i) => a + groups[i]!.size, 0);
    const memory = Math.max(EW_MEMORY_COST, EW_STREAM_COST * (nIn + outputs.length));
    const work = total * Math.max(0, kernel.cost - memory);
    const parts = work < this.#splitWork ? 1 : this.#gemm.parts;
    const call: JitCall = {
      base: [],
      step: [...access.map((a) => (a === "dense" ? 16 : 0)), ...outputs.map(() => 16), 0],
      total: 0,
      flat: true,
      n: 0,
      cols: 0,
      itemWork: 4 * kernel.cost,
      more: mine.map((i) => {
        const n = groups[i]!.size;
        return { base: [], total: (n + 3) >> 2, n };
      }),
    };
    const fr = this.#gemm.frame(
      [
        ...mine.flatMap((i) => {
          const g = groups[i]!;
          // A dense vector kernel reads whole vectors: the last one may pass the end.
          return g.inputs.map((x) => ({ a: d(x), len: g.size, read: up4(g.size) }));
        }),
        ...sc.map((a) => ({ a, len: 1, read: 4 })),
      ],
      outs.flat(),
      up4(consts.length) + 4 + Gemm.jitScratch(kernel, call, parts),
    );
    const constAt = fr.scratch;
    new Float32Array(this.#gemm.memory.buffer).set(consts, constAt);
    const scAt = fr.ins.slice(nIn * mine.length);
    const segs = mine.map((_, s) =>
      [
        ...fr.ins.slice(s * nIn, (s + 1) * nIn),
        ...scAt,
        ...fr.outs.slice(s * outputs.length, (s + 1) * outputs.length),
        constAt,
      ].map((p) => p * 4)
    );
    const [first, ...rest] = call.more!;
    call.base = segs[0]!;
    call.total = first!.total;
    call.n = first!.n;
    call.more = rest.map((m, s) => ({ ...m, base: segs[s + 1]! }));
    const inPlaceAny = (inPlace ?? []).some((i) => i >= 0);
    this.#gemm.runJit(kernel, call, parts, constAt + up4(consts.length) + 4, !inPlaceAny);
    fr.finish();
    mine.forEach((i, s) => {
      const g = groups[i]!;
      res[i] = outs[s]!.map((o, t) =>
        (inPlace?.[t] ?? -1) < 0 ? this.wrap(o) : g.inputs[inPlace![t]!]!
      );
    });
    return res;
  }

  override copyInto(dst: Storage, dstView: View, src: Storage, srcView: View): void {
    this.#gemm.settle(); // no worker may still be writing dst
    stridedCopy(
      d(dst),
      dstView.offset,
      dstView.strides,
      d(src),
      srcView.offset,
      srcView.strides,
      srcView.shape,
    );
  }

  override reduce(
    op: ReduceOp,
    x: Storage,
    shape: readonly number[],
    axes: readonly number[],
  ): Storage {
    // Fast path: a sum over one contiguous run of axes, as [outer, red, inner]; the same f64
    // accumulation in the same order as the CPU backend, so the same bits.
    const contiguous = axes.every((a, i) => i === 0 || a === axes[i - 1]! + 1);
    if (op !== "sum" || axes.length === 0 || !contiguous) return super.reduce(op, x, shape, axes);
    const xs = d(x);
    const prod = (a: number, b: number) => shape.slice(a, b).reduce((p, q) => p * q, 1);
    const first = axes[0]!, last = axes[axes.length - 1]! + 1;
    const outer = prod(0, first), red = prod(first, last), inner = prod(last, shape.length);
    if (inner > 1 && outer * red * inner >= COL_SUM_MIN) {
      return this.wrap(this.#gemm.colSum(xs, outer, red, inner));
    }
    const o = new Float32Array(outer * inner);
    if (inner === 1) {
      for (let a = 0; a < outer; a++) {
        let acc = 0;
        const base = a * red;
        for (let r = 0; r < red; r++) acc += xs[base + r]!;
        o[a] = acc;
      }
    } else {
      const acc = new Float64Array(inner);
      for (let a = 0; a < outer; a++) {
        acc.fill(0);
        for (let r = 0; r < red; r++) {
          const base = (a * red + r) * inner;
          for (let c = 0; c < inner; c++) acc[c]! += xs[base + c]!;
        }
        o.set(acc, a * inner);
      }
    }
    return this.wrap(o);
  }

  /**
   * A weight gradient aᵀ·b (one 2-D product with a transposed A), with the column sums of `a`
   * when `sums` is given (filled in place): see matmulBiasGrad.
   */
  #weightGrad(
    as: Float32Array,
    bs: Float32Array,
    g: MatmulGeom,
    sums?: Float32Array,
  ): Float32Array {
    if (g.n >= 2 * g.m && g.k >= 1024 && g.m % GEMM_NR === 0) {
      // A weight gradient dzᵀ·x with few rows and wide rows (DiT's fc2: [128, 512], k = 3136)
      // as (xᵀ·dz)ᵀ: the kernel ran the [512, 128] orientation at 79–83 GFLOP/s against 71–72
      // (each element the same products summed in the same order: the same bits), and the
      // transpose of the small result costs ~0.1 ms of a ~5 ms product. dz is then B: its
      // column sums are B's.
      const gs: MatmulGeom = { ...g, m: g.n, n: g.m };
      const t = this.#gemm.out(g.m * g.n, this.#gemm.productCap(gs));
      this.#gemm.product(bs, 0, as, 0, gs, t, 0, sums ? { ...PLAIN, sumB: sums } : null);
      const o = this.#gemm.out(g.m * g.n), m = g.m, n = g.n;
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) o[i * n + j] = t[j * m + i]!;
      if (!this.#gemm.arena.give(t)) this.#gemm.pool.give(t);
      return o;
    }
    const o = this.#gemm.out(g.m * g.n, this.#gemm.productCap(g));
    this.#gemm.product(as, 0, bs, 0, g, o, 0, sums ? { ...PLAIN, sumA: sums } : null);
    return o;
  }

  /**
   * dW = aᵀ·b and db = Σ_rows a in one SGEMM (see Backend.matmulBiasGrad): the transposed-A
   * kernel sums a's columns as it reads them (or, in the swapped orientation, its B's rows):
   * the same f64 chains as the col_sum kernel's, so db has reduce's bits, and the separate sum
   * no longer reads all of a again (a DiT step's four [3136, 512] and four [3136, 384] sums
   * each read 4.8–6.4 MB).
   */
  override matmulBiasGrad(
    a: Storage,
    b: Storage,
    m: number,
    n: number,
    k: number,
  ): [Storage, Storage] {
    if (m * n * k === 0) return super.matmulBiasGrad(a, b, m, n, k);
    const g = weightGradGeom(m, n, k);
    const sums = this.#gemm.out(m);
    return [this.wrap(this.#weightGrad(d(a), d(b), g, sums)), this.wrap(sums)];
  }

  override matmul(a: Storage, b: Storage, g: MatmulGeom, epilogue?: MatmulEpilogue): Storage {
    const as = d(a), bs = d(b);
    if (g.transA && !g.transB && g.batch === 1 && !epilogue && g.m * g.n > 0) {
      return this.wrap(this.#weightGrad(as, bs, g));
    }
    // The products are written where the result lives (room for the rows past m included). A
    // bias-only epilogue (a linear layer without activation) is added by the kernel itself, and
    // so is GELU-tanh (of the sum or the sum plus a bias) where the result is written in place.
    const o = this.#gemm.out(g.batch * g.m * g.n, this.#gemm.productCap(g));
    const gelu = epilogue ? unaryOfProduct(epilogue.expr, "geluTanh") : null;
    const inKernel = gelu !== null && epilogue!.rows.length === (gelu === "bias" ? 1 : 0) &&
      this.#gemm.auxFits(g, o, 0);
    const bias = epilogue && (inKernel ? gelu === "bias" : isBiasAdd(epilogue.expr)) &&
        epilogue.rows.length === 1
      ? d(epilogue.rows[0]!)
      : null;
    const mode = inKernel ? GEMM_EPILOGUE.geluValue : GEMM_EPILOGUE.plain;
    this.#products(as, bs, g, o, { mode, bias });
    if (!epilogue || bias || inKernel) return this.wrap(o);
    const rowsOf = epilogue.rows.map(d);
    // A linear layer's bias (and activation): one SIMD pass from the product to the result.
    // Not in place: a split call's last thread redoes chunks a worker may be in (drainChunks),
    // which must find their inputs unchanged.
    const res = g.n % 4 === 0
      ? this.#simd(
        [epilogue.expr],
        [o, ...rowsOf],
        ["dense", ...rowsOf.map(() => "row" as const)],
        g.batch * g.m * g.n,
        g.batch * g.m,
        g.n,
      )
      : null;
    if (res) {
      if (!this.#gemm.arena.give(o)) this.#gemm.pool.give(o);
      return this.wrap(res[0]!);
    }
    const acc = this.wrap(o);
    const [out] = this.elementwise(
      [epilogue.expr],
      [acc, ...epilogue.rows],
      [[g.n, 1], ...epilogue.rows.map(() => [0, 1])],
      [g.batch * g.m, g.n],
    );
    this.free(acc);
    return out!;
  }

  /**
   * A Philox stream by a SIMD kernel (kernels/wasm_random.ts): `randomStream`'s elements bit
   * for bit, the normals' rare undecided f32 roundings recomputed by `randomElement`. Big
   * calls (normals from ~8.7k) split in chunks across the threads, like elementwise calls. Even
   * a few elements: ~1.6–2 µs a call, as randomStream's for 4 uniforms or 8 normals (2.5
   * against 5.6 for 64 normals, 3.9 against 11.6 for 1024 uniforms).
   */
  override random(kind: RandomKind, size: number, st: RandomState): Storage {
    if (size === 0) return super.random(kind, size, st);
    let kernel = this.#randomKernels.get(kind);
    if (!kernel) {
      const bytes = randomModule(kind);
      const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes as BufferSource), {
        env: { mem: this.#gemm.memory },
      });
      // Ids below 0: the workers cache compiled kernels by id with the elementwise ones (≥ 0).
      const id = -1 - ["bits", "uniform", "normal"].indexOf(kind);
      kernel = {
        run: inst.exports.k as (...a: number[]) => void,
        bytes,
        id,
        cost: randomCost(kind),
      };
      this.#randomKernels.set(kind, kernel);
    }
    const group = randomGroup(kind), total = (size + 3) >> 2;
    // The kernel writes whole groups: up to group − 1 floats past `size`.
    const o = this.#gemm.out(size, Math.ceil(size / group) * group);
    const parts = size * (kernel.cost - EW_MEMORY_COST) < this.#splitWork
      ? 1
      : Math.min(this.#gemm.parts, total);
    // Items of 4 elements: the output advances 16 bytes, and so does the second pointer, which
    // the kernel reads as 4 × the index of its first element.
    const call: JitCall = {
      base: [],
      step: [16, 16, 0],
      total,
      flat: true,
      n: size,
      cols: size,
      itemWork: 4 * kernel.cost,
    };
    // Scratch: room for a group past an output copied out of it, the constant block, runJit's.
    const words = up4(RANDOM_CONST_WORDS + RANDOM_FLAGS);
    const fr = this.#gemm.frame([], [o], 16 + words + Gemm.jitScratch(kernel, call, parts));
    const cp = fr.scratch + 16;
    const block = new Int32Array(this.#gemm.memory.buffer, cp * 4, words);
    block.set([st.key[0], st.key[1], st.counter[0], st.counter[1], 0, RANDOM_FLAGS]);
    call.base = [fr.outs[0]! * 4, 0, cp * 4];
    this.#gemm.runJit(kernel, call, parts, cp + words);
    const flagged = Atomics.load(block, 4);
    fr.finish();
    if (flagged > 0) {
      // A worker still in a chunk the caller redid rewrites the kernel's values: wait for it.
      this.#gemm.settle();
      if (flagged > RANDOM_FLAGS) o.set(randomStream(kind, size, st));
      else {
        for (let j = 0; j < flagged; j++) {
          const i = block[RANDOM_CONST_WORDS + j]!;
          if (i < size) o[i] = randomElement(kind, i, st);
        }
      }
    }
    return this.wrap(o);
  }

  // Every matrix of a batched product, with the kernel's epilogue (aux at the same offsets).
  #products(
    as: Float32Array,
    bs: Float32Array,
    g: MatmulGeom,
    o: Float32Array,
    epi: ProductEpilogue,
  ) {
    if (g.m * g.n === 0) return;
    for (let bi = 0; bi < g.batch; bi++) {
      const ao = bi * g.aBatchStride, bo = bi * g.bBatchStride;
      this.#gemm.product(as, ao, bs, bo, g, o, bi * g.m * g.n, epi);
    }
  }

  /**
   * GELU-tanh and its derivative of the product (plus a bias), and the product times a dense
   * array, in the SGEMM's stores (kernels/wasm_gemm.ts GEMM_EPILOGUE) where the outputs are
   * written in place (n a multiple of 8, in the memory); else the product, then one pass.
   */
  override matmulOutputs(
    a: Storage,
    b: Storage,
    g: MatmulGeom,
    outputs: MatmulOutputs,
  ): Storage[] {
    const { exprs, rows, dense } = outputs;
    const size = g.batch * g.m * g.n, cap = this.#gemm.productCap(g);
    const [e0, e1] = exprs;
    // [geluTanh(z), geluTanhGrad(z)], z the product or the product plus one bias row.
    const gelu = exprs.length === 2 && dense.length === 0 ? unaryOfProduct(e0!, "geluTanh") : null;
    if (
      gelu !== null && unaryOfProduct(e1!, "geluTanhGrad") === gelu &&
      rows.length === (gelu === "bias" ? 1 : 0)
    ) {
      const o = this.#gemm.out(size, cap), aux = this.#gemm.out(size, cap);
      if (this.#gemm.auxFits(g, o, 0) && this.#gemm.auxFits(g, aux, 0)) {
        const bias = gelu === "bias" ? d(rows[0]!) : null;
        this.#products(d(a), d(b), g, o, { mode: GEMM_EPILOGUE.gelu, bias, aux });
        return [this.wrap(o), this.wrap(aux)];
      }
      for (const x of [o, aux]) if (!this.#gemm.arena.give(x)) this.#gemm.pool.give(x);
    }
    // [product · dense 0]
    if (
      exprs.length === 1 && rows.length === 0 && dense.length === 1 && e0!.kind === "binary" &&
      e0!.op === "mul" && isInput(e0!.a, 0) && isInput(e0!.b, 1) && d(dense[0]!).length === size
    ) {
      const o = this.#gemm.out(size, cap);
      if (this.#gemm.auxFits(g, o, 0)) {
        this.#products(d(a), d(b), g, o, {
          mode: GEMM_EPILOGUE.mulAux,
          bias: null,
          aux: d(dense[0]!),
        });
        return [this.wrap(o)];
      }
      if (!this.#gemm.arena.give(o)) this.#gemm.pool.give(o);
    }
    return super.matmulOutputs(a, b, g, outputs);
  }
}

/**
 * Create the `wasm` backend: compiles the SIMD kernel (relaxed multiply-add where the engine
 * has it) and starts `threads − 1` matmul workers.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createWasmBackend } from "./wasm.ts";
 * const be = await createWasmBackend({ threads: 2 });
 * assert.equal(be.name, "wasm");
 * be.close();
 * ```
 */
export async function createWasmBackend(opts: WasmBackendOptions = {}): Promise<WasmBackend> {
  if (!wasmSimdAvailable()) {
    throw new Error(
      "The wasm backend needs WebAssembly SIMD and SharedArrayBuffer (in a browser: a " +
        "cross-origin-isolated page)",
    );
  }
  const cpus = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator
    ?.hardwareConcurrency ?? 1;
  // A browser page's main thread may not block in Atomics.wait, which the matmul split needs:
  // one thread there (a Worker or Deno may use every core).
  const page = !("Deno" in globalThis) && typeof (globalThis as { document?: unknown }).document !==
      "undefined";
  const threads = opts.threads ?? (page ? 1 : Math.min(8, Math.max(1, cpus)));
  if (!Number.isInteger(threads) || threads < 1) {
    throw new RangeError(`threads: expected an integer >= 1, got ${threads}`);
  }
  if (page && threads > 1) {
    throw new RangeError(
      `threads: ${threads} needs a thread that may block (a Worker, or Deno); a page's main ` +
        "thread runs the wasm backend on 1",
    );
  }
  const split = opts.elementwiseSplitWork ?? EW_SPLIT_WORK;
  if (!(split >= 0)) {
    throw new RangeError(`elementwiseSplitWork: expected a number >= 0, got ${split}`);
  }
  const arena = opts.arenaBytes ?? ARENA_BYTES;
  if (!(arena >= 0 && arena <= 2 ** 32)) {
    throw new RangeError(`arenaBytes: expected a number in [0, 2^32], got ${arena}`);
  }
  return await WasmBackend.create(threads, split, arena);
}
