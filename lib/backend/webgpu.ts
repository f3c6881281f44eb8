/**
 * @file The WebGPU backend: every `Backend` method as WGSL compute kernels recorded through
 * the batching runtime in lib/device. Semantics follow lib/backend/cpu.ts (the living spec)
 * with two documented exceptions forced by kernels that cannot throw: `gather` yields NaN for
 * an out-of-range or non-integer index and `scatterAdd` ignores it (the CPU throws).
 * @module
 */
import type {
  Backend,
  ElementwiseGroup,
  MatmulEpilogue,
  MatmulOutputs,
  Storage,
  View,
} from "./backend.ts";
import { matmulBiasGradByParts, matmulOutputsByParts } from "./backend.ts";
import { type Expr, type MatmulGeom, type ReduceOp, WGSL_HELPERS } from "../ir.ts";
import { randomBlocks, type RandomKind, type RandomState } from "../philox.ts";
import {
  f32Bits,
  GpuRuntime,
  grid1d,
  type RuntimeOptions,
  type RuntimeStats,
} from "../device/runtime.ts";
import { collapseAxes, WG } from "../../kernels/common.ts";
import { captureHooks, type Dyn } from "../capture.ts";
import type { DynWord } from "../device/trace.ts";
import {
  copyKernel,
  fillKernel,
  type InputMode,
  iotaKernel,
  mapKernel,
  mapParamWords,
} from "../../kernels/elementwise.ts";
import { emitExpr } from "../../kernels/expr.ts";
import { reduceColsKernel, reduceGroupKernel, reduceThreadKernel } from "../../kernels/reduce.ts";
import { gatherKernel, scatterAddKernel } from "../../kernels/gather.ts";
import {
  LSE_COL_TILE,
  lseColGroupKernel,
  lseColThreadKernel,
  lseRowGroupKernel,
  lseRowThreadKernel,
} from "../../kernels/lse.ts";
import { randomKernel } from "../../kernels/random.ts";
import {
  attentionBackwardKVKernel,
  attentionBackwardQKernel,
  attentionForwardKernel,
  attentionRows,
} from "../../kernels/attention.ts";
import {
  lnModBackwardColsKernel,
  lnModBackwardRowsKernel,
  lnModForwardKernel,
} from "../../kernels/layernorm.ts";
import { fusedGroupsKernel, fusedGroupsParamWords } from "../../kernels/fused_groups.ts";
import {
  buildMatmul,
  isCpuAdapter,
  type MatmulBuildOptions,
  uniformChunk,
} from "../../kernels/matmul.ts";
import { stridesOf } from "../shape.ts";

// The parameter words of dynamic constants (lib/capture.ts): recomputed when a trace replays.
function dynWords(base: number, dyn: readonly (Dyn | undefined)[]): DynWord[] | undefined {
  let out: DynWord[] | undefined;
  dyn.forEach((f, j) => {
    if (f) (out ??= []).push([base + j, (env) => f32Bits(f(env))]);
  });
  return out;
}

// The counter words of a random kernel whose generator advances per step.
function dynCounter(state: RandomState): DynWord[] | undefined {
  const c = state.dynamicCounter;
  if (!c) return undefined;
  return [[2, (env) => c(env) >>> 0], [3, (env) => Math.floor(c(env) / 0x100000000) >>> 0]];
}

/**
 * WebGPU storage: a pooled GPU buffer (null once freed).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { backendByName, init } from "../../mod.ts";
 * import { GpuStorage } from "./webgpu.ts";
 * await init();
 * const be = backendByName("webgpu"); // undefined without an adapter
 * if (be) assert.ok(be.alloc(4) instanceof GpuStorage);
 * ```
 */
export class GpuStorage implements Storage {
  /** @internal */
  constructor(readonly size: number, public buffer: GPUBuffer | null) {}
}

/** Counters of the WebGPU backend: the runtime's plus live bytes. */
export interface WebGPUStats extends RuntimeStats {
  /** Bytes held by live storages (4 per element). */
  liveBytes: number;
  /** The most `liveBytes` reached since the backend was made or `resetPeakLiveBytes()`. */
  peakLiveBytes: number;
}

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);
const u32 = (x: number) => x >>> 0;

// A reduction runs one invocation per output when the reduced extent is short or there are
// enough outputs to fill the device; else one workgroup per output (a strided loop and a
// shared-memory tree). On lavapipe barriers are costly (measured on [1024, 1024] over axis 1:
// ~4 ms one invocation per output, ~36 ms one workgroup per output), so CPU adapters prefer
// invocations as soon as there are a few dozen outputs.
function threadPerOutput(outN: number, redN: number, cpuAdapter: boolean): boolean {
  return cpuAdapter ? redN <= 256 || outN >= 64 : redN <= 64 || outN >= 8192;
}
// Distinct matmul geometries whose kernel key and grid are memoised (then the memo restarts).
const MATMUL_MEMO_MAX = 512;
// On CPU adapters, elementwiseGroups gives groups of at least this many elements their own
// dispatch.
const GROUP_OWN_DISPATCH = 8192;
// On CPU adapters, A·B transposes a B of at most this many elements to read it as a uniform.
const NN_TRANSPOSE_MAX = 1 << 20;
// Loops longer than this use Kahan summation.
const KAHAN_MIN = 4096;

/**
 * The WebGPU backend. Create it with `createWebGPUBackend()`; `init()` (lib/backend/select.ts)
 * does so and falls back to the CPU backend when it rejects.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { backendByName, init } from "../../mod.ts";
 * await init();
 * const be = backendByName("webgpu"); // undefined without an adapter
 * if (be) {
 *   const s = be.upload(new Float32Array([1, 2, 3]));
 *   const x = { kind: "input", index: 0 } as const;
 *   const [y] = be.elementwise([{ kind: "unary", op: "square", x, p0: 0, p1: 0 }], [s], [[1]], [3]);
 *   assert.deepEqual([...await be.read(y!)], [1, 4, 9]);
 *   be.free(s);
 *   be.free(y!);
 * }
 * ```
 */
export class WebGPUBackend implements Backend {
  readonly name = "webgpu" as const;
  readonly description: string;
  /** The runtime (device, pool, batching). */
  readonly runtime: GpuRuntime;
  #live = 0;
  #peak = 0;
  #cpuAdapter: boolean;
  /**
   * The adapter is a software rasterizer on the CPU (lavapipe/llvmpipe, SwiftShader, a
   * fallback adapter): `init()` then prefers the `wasm` backend, which runs these workloads
   * 2–3× faster on the same cores (docs/engine_round2.md).
   */
  readonly software: boolean;
  #registry: FinalizationRegistry<{ buf: GPUBuffer; bytes: number }>;
  #adapter: { isFallback: boolean; description: string };
  #matmuls = new Map<
    string,
    {
      key: string;
      workgroups: [number, number, number];
      geom: MatmulGeom;
      opts: MatmulBuildOptions;
      chunk: number;
    }
  >();
  /**
   * `elementwiseGroups` gives each group of ≥ 8192 elements a dispatch of its own (default: on
   * CPU adapters, where a grouped kernel's branches all run masked; see `elementwiseGroups`).
   */
  groupsSplitLarge: boolean;
  /**
   * At most this many groups share one `elementwiseGroups` dispatch (default: as many as the
   * binding limit allows; 1 gives each group a one-branch kernel of its own).
   */
  groupsPerDispatch = Infinity;

  #matmulOverrides: MatmulBuildOptions = {};
  /**
   * @internal Options forced on every matmul kernel (tests and benchmarks compare variants,
   * e.g. `{ fmaOrder: "k-outer" }`); setting it forgets the memoised kernel choices.
   */
  get matmulOverrides(): MatmulBuildOptions {
    return this.#matmulOverrides;
  }
  set matmulOverrides(o: MatmulBuildOptions) {
    this.#matmulOverrides = { ...o };
    this.#matmuls.clear();
  }

  /** @internal Use `createWebGPUBackend`. */
  constructor(rt: GpuRuntime) {
    this.runtime = rt;
    this.#adapter = { isFallback: rt.isFallback, description: rt.adapterDescription };
    this.#cpuAdapter = isCpuAdapter(this.#adapter);
    this.groupsSplitLarge = this.#cpuAdapter;
    this.description = `webgpu: ${rt.adapterDescription}${rt.isFallback ? " [fallback]" : ""}`;
    this.software = this.#cpuAdapter;
    // Storages dropped without free() return their buffers once collected, but still count in
    // liveBytes(): they were leaks, and a counter the collector changes at random moments would
    // make "returns to baseline" checks flaky.
    this.#registry = new FinalizationRegistry((h) => {
      this.runtime.release(h.buf);
    });
  }

  #buf(s: Storage, what: string): GPUBuffer {
    if (!(s instanceof GpuStorage)) {
      throw new TypeError(
        `Expected ${what} to be a WebGPU storage but found ${
          (s as object)?.constructor?.name ?? typeof s
        } (is the tensor on another backend?)`,
      );
    }
    if (s.buffer === null) {
      throw new Error(
        `Cannot use a WebGPU storage of ${s.size} elements (${what}) after it was freed`,
      );
    }
    return s.buffer;
  }

  #wrap(size: number, buf: GPUBuffer): GpuStorage {
    const s = new GpuStorage(size, buf);
    const bytes = size * 4;
    this.#live += bytes;
    if (this.#live > this.#peak) this.#peak = this.#live;
    this.#registry.register(s, { buf, bytes }, s);
    return s;
  }

  #new(size: number): GpuStorage {
    return this.#wrap(size, this.runtime.acquire(Math.max(size, 1) * 4));
  }

  #grid(n: number, per = WG): [number, number, number] {
    return grid1d(Math.ceil(n / per), this.runtime.maxWorkgroupsPerDim);
  }

  upload(data: Float32Array): Storage {
    if (data.length === 0) return this.#new(0);
    return this.#wrap(data.length, this.runtime.upload(data));
  }

  readSync(_s: Storage): Float32Array {
    throw new Error("dataSync() is only available on the CPU backend; use await t.data()");
  }

  async read(s: Storage): Promise<Float32Array> {
    const buf = this.#buf(s, "the storage to read");
    if (s.size === 0) return new Float32Array(0);
    return new Float32Array(await this.runtime.read(buf, s.size * 4));
  }

  alloc(size: number): Storage {
    return this.#new(size);
  }

  free(s: Storage): void {
    if (!(s instanceof GpuStorage) || s.buffer === null) return;
    this.#registry.unregister(s);
    this.#live -= s.size * 4;
    this.runtime.release(s.buffer);
    s.buffer = null;
  }

  liveBytes(): number {
    return this.#live;
  }

  /** The high-water mark of `liveBytes()` since creation or the last reset. */
  peakLiveBytes(): number {
    return this.#peak;
  }

  /** Start a new high-water mark at the current `liveBytes()` (e.g. before one step). */
  resetPeakLiveBytes(): void {
    this.#peak = this.#live;
  }

  flush(): void {
    this.runtime.flush();
  }

  sync(): Promise<void> {
    return this.runtime.sync();
  }

  /** Counters: submits, dispatches, pool and live bytes (see `RuntimeStats`). */
  stats(): WebGPUStats {
    return { ...this.runtime.stats(), liveBytes: this.#live, peakLiveBytes: this.#peak };
  }

  /** @internal Destroy the device, as a lost device would (tests). */
  destroyDevice(): void {
    this.runtime.destroy();
  }

  fill(size: number, value: number): Storage {
    const out = this.#new(size);
    if (size > 0) {
      const k = this.runtime.kernel("fill", fillKernel);
      this.runtime.dispatch(k, [out.buffer!], [size, f32Bits(value)], this.#grid(size));
    }
    return out;
  }

  iota(size: number, start: number, step: number): Storage {
    const out = this.#new(size);
    if (size > 0) {
      const k = this.runtime.kernel("iota", iotaKernel);
      this.runtime.dispatch(
        k,
        [out.buffer!],
        [size, f32Bits(start), f32Bits(step)],
        this.#grid(size),
      );
    }
    return out;
  }

  elementwise(
    outputs: readonly Expr[],
    inputs: readonly Storage[],
    inputStrides: readonly (readonly number[])[],
    outShape: readonly number[],
  ): Storage[] {
    if (inputs.length + outputs.length > this.runtime.maxStorageBuffers) {
      return this.#eager(outputs, inputs, inputStrides, outShape);
    }
    const bufs = inputs.map((s, i) => this.#buf(s, `input ${i}`));
    const n = prod(outShape);
    const res = outputs.map(() => this.#new(n));
    if (n === 0) return res;
    const c = collapseAxes(outShape, [stridesOf(outShape), ...inputStrides]);
    const rank = c.shape.length;
    const cont = c.strides[0]!;
    const last = rank - 1;
    // A row vector broadcast over the leading axes (a bias added to a [B, C] matrix): strides
    // [0, …, 0, 1]. Reading it at i % C keeps the kernel vec4 and free of per-axis divisions
    // (the strided path cost ~4x a contiguous add on lavapipe at [256, 256]).
    const isRow = (st: readonly number[]) =>
      rank >= 2 && st[last] === 1 && st.every((v, d) => d === last || v === 0);
    const modes: InputMode[] = c.strides.slice(1).map((st) =>
      st.every((v, d) => v === cont[d])
        ? "contiguous"
        : st.every((v) => v === 0)
        ? "scalar"
        : isRow(st)
        ? (c.shape[last]! % 4 === 0 ? "row4" : "row")
        : "strided"
    );
    const params = [n, ...c.shape];
    modes.forEach((m, i) => {
      if (m === "strided") params.push(...c.strides[i + 1]!.map(u32));
    });
    // Without strided inputs each invocation handles four elements (2–3x faster on lavapipe).
    const vec4 = !modes.includes("strided");
    const rowLen = c.shape[last] ?? 1;
    const rowPow2 = (modes.includes("row") || modes.includes("row4")) &&
      (rowLen & (rowLen - 1)) === 0;
    // Scalars are parameter words, so the pipeline depends on the DAG's structure only.
    const e = emitExpr(outputs, { base: mapParamWords(rank, modes) });
    const dyn = dynWords(params.length, e.scalarDyn);
    params.push(...e.scalars.map(f32Bits));
    const k = this.runtime.kernel(
      `map:${e.body}:${e.outs.join(",")}:${modes.join(",")}:${rank}${rowPow2 ? ":p2" : ""}`,
      () =>
        mapKernel({
          helpers: WGSL_HELPERS,
          modes,
          rank,
          body: e.body,
          outs: e.outs,
          extraWords: e.scalars.length,
          vec4,
          rowPow2,
        }),
    );
    this.runtime.dispatch(
      k,
      [...bufs, ...res.map((r) => r.buffer!)],
      params,
      this.#grid(vec4 ? Math.ceil(n / 4) : n),
      dyn,
    );
    return res;
  }

  elementwiseGroups(
    outputs: readonly Expr[],
    groups: readonly ElementwiseGroup[],
    scalars: readonly Storage[],
    inPlace?: readonly number[],
  ): Storage[][] {
    const k = groups[0]?.inputs.length ?? 0, m = outputs.length, ns = scalars.length;
    const into = outputs.map((_, t) => inPlace?.[t] ?? -1);
    const fresh = into.filter((u) => u < 0).length;
    const empty = () => outputs.map(() => this.#new(0));
    const res: Storage[][] = groups.map((g) => (g.size === 0 ? empty() : []));
    const live = groups.map((_, i) => i).filter((i) => groups[i]!.size > 0);
    // WebGPU caps the storage buffers one shader stage may bind (maxStorageBuffersPerShaderStage:
    // 8 by default, 8–16 on many GPUs, more on lavapipe; the runtime requests the adapter's
    // limit). Each group binds its k inputs and the outputs not written in place, plus the
    // ns scalars once, so the groups are split into as few dispatches as fit: Adam in place
    // binds 4 per parameter, so one dispatch covers the 8 parameters of a small MLP on
    // lavapipe (32) and a handful cover a large model on a GPU offering 8–16.
    const per = Math.min(
      this.groupsPerDispatch,
      Math.floor((this.runtime.maxStorageBuffers - ns) / (k + fresh)),
    );
    if (per < 1) {
      for (const i of live) {
        const g = groups[i]!;
        const outs = this.elementwise(
          outputs,
          [...g.inputs, ...scalars],
          [...g.inputs.map(() => [1]), ...scalars.map(() => [0])],
          [g.size],
        );
        res[i] = outs.map((o, t) => {
          if (into[t]! < 0) return o;
          const dst = g.inputs[into[t]!]!;
          const v = { shape: [g.size], strides: [1], offset: 0 };
          this.copyInto(dst, v, o, v);
          this.free(o);
          return dst;
        });
      }
      return res;
    }
    const sbufs = scalars.map((s, t) => this.#buf(s, `scalar ${t}`));
    // WGSL cannot index bindings dynamically, so each invocation picks its group with a chain
    // of branches. A GPU skips the branches its workgroup does not take (group ranges are
    // workgroup-aligned), but llvmpipe runs every branch masked: measured on lavapipe, Adam
    // over the 8 VelocityMLP parameters (2 of 65536 elements) took 1.8 ms in one grouped
    // dispatch against 1.0 ms in 8. So on CPU adapters a large group gets a dispatch of its
    // own (a one-branch kernel) and only the small ones share one.
    const large = (i: number) => this.groupsSplitLarge && groups[i]!.size >= GROUP_OWN_DISPATCH;
    const chunks: number[][] = live.filter(large).map((i) => [i]);
    const small = live.filter((i) => !large(i));
    for (let c = 0; c < small.length; c += per) chunks.push(small.slice(c, c + per));
    for (const chunk of chunks) {
      const G = chunk.length;
      const e = emitExpr(outputs, { base: fusedGroupsParamWords(G) });
      const bufs: GPUBuffer[] = [];
      const ends: number[] = [], lens: number[] = [];
      let total = 0;
      for (const i of chunk) {
        const g = groups[i]!;
        if (g.inputs.length !== k) {
          throw new RangeError(
            `Expected every group to have ${k} inputs but group ${i} has ${g.inputs.length}`,
          );
        }
        g.inputs.forEach((s, t) => bufs.push(this.#buf(s, `group ${i} input ${t}`)));
        const outs = into.map((u) => (u < 0 ? this.#new(g.size) : g.inputs[u]!));
        outs.forEach((o, t) => {
          if (into[t]! < 0) bufs.push((o as GpuStorage).buffer!);
        });
        res[i] = outs;
        lens.push(Math.ceil(g.size / 4));
        total += Math.ceil(lens[lens.length - 1]! / WG) * WG;
        ends.push(total);
      }
      bufs.push(...sbufs);
      const kern = this.runtime.kernel(
        `fusedGroups:${G}:${k}:${m}:${ns}:${into.join(",")}:${e.body}:${e.outs.join(",")}`,
        () =>
          fusedGroupsKernel({
            helpers: WGSL_HELPERS,
            groups: G,
            inputs: k,
            outputs: m,
            scalars: ns,
            body: e.body,
            outs: e.outs,
            extraWords: e.scalars.length,
            inPlace: into,
          }),
      );
      this.runtime.dispatch(
        kern,
        bufs,
        [total, ...ends, ...lens, ...e.scalars.map(f32Bits)],
        this.#grid(total),
        dynWords(1 + 2 * G, e.scalarDyn),
      );
    }
    return res;
  }

  // More buffers than one kernel may bind: evaluate node by node on contiguous temporaries.
  #eager(
    outputs: readonly Expr[],
    inputs: readonly Storage[],
    inputStrides: readonly (readonly number[])[],
    outShape: readonly number[],
  ): Storage[] {
    const n = prod(outShape);
    const dense = stridesOf(outShape);
    const memo = new Map<Expr, Storage>();
    const temps: Storage[] = [];
    const x0: Expr = { kind: "input", index: 0 }, x1: Expr = { kind: "input", index: 1 };
    const x2: Expr = { kind: "input", index: 2 };
    const one = (e: Expr, ins: Storage[]) =>
      this.elementwise([e], ins, ins.map(() => dense), outShape)[0]!;
    const ev = (e: Expr): Storage => {
      const have = memo.get(e);
      if (have) return have;
      let s: Storage;
      switch (e.kind) {
        case "input":
          s = this.alloc(n);
          this.copyInto(s, { shape: outShape, strides: dense, offset: 0 }, inputs[e.index]!, {
            shape: outShape,
            strides: inputStrides[e.index]!,
            offset: 0,
          });
          break;
        case "const":
          if (e.dyn) captureHooks()?.refuse("a per-step constant took the node-by-node path");
          s = this.fill(n, e.value);
          break;
        case "unary":
          s = one({ ...e, x: x0 }, [ev(e.x)]);
          break;
        case "binary":
          s = one({ ...e, a: x0, b: x1 }, [ev(e.a), ev(e.b)]);
          break;
        case "where":
          s = one({ kind: "where", c: x0, a: x1, b: x2 }, [ev(e.c), ev(e.a), ev(e.b)]);
          break;
      }
      memo.set(e, s);
      temps.push(s);
      return s;
    };
    // Each output is a fresh copy, so freeing the temporaries never frees a result.
    const res = outputs.map((o) => one(x0, [ev(o)]));
    for (const t of temps) this.free(t);
    return res;
  }

  reduce(op: ReduceOp, x: Storage, shape: readonly number[], axes: readonly number[]): Storage {
    const xb = this.#buf(x, "x");
    const st = stridesOf(shape);
    const outN = prod(shape.filter((_, i) => !axes.includes(i)));
    const redN = prod(axes.map((a) => shape[a]!));
    const out = this.#new(outN);
    if (outN === 0) return out;
    // Group axes into kept and reduced runs: size-1 axes drop out, and adjacent axes of the
    // same kind merge (the input is contiguous), which keeps the flattened reduced index of
    // the CPU's row-major loop.
    const kShape: number[] = [], kStr: number[] = [], rShape: number[] = [], rStr: number[] = [];
    let prevKind: "k" | "r" | null = null;
    for (let d = 0; d < shape.length; d++) {
      if (shape[d] === 1) continue;
      const kind = axes.includes(d) ? "r" : "k";
      const [sh, sr] = kind === "k" ? [kShape, kStr] : [rShape, rStr];
      if (kind === prevKind) {
        sh[sh.length - 1]! *= shape[d]!;
        sr[sr.length - 1] = st[d]!;
      } else {
        sh.push(shape[d]!);
        sr.push(st[d]!);
      }
      prevKind = kind;
    }
    const params = [outN, redN, ...kShape, ...kStr, ...rShape, ...rStr];
    const kr = kShape.length, rr = rShape.length;
    const perOutput = threadPerOutput(outN, redN, this.#cpuAdapter);
    if (
      perOutput && op === "sum" && kr === 1 && rr === 1 && kStr[0] === 1 && rStr[0] === outN
    ) {
      // Leading-axis sum of a contiguous matrix (bias gradients): column kernel.
      const vec4 = outN % 4 === 0;
      const kahan = redN >= KAHAN_MIN;
      const wg = this.#cpuAdapter ? 8 : 64;
      const k = this.runtime.kernel(
        `reduceCols:${vec4}:${kahan}:${wg}`,
        () => reduceColsKernel(vec4, kahan, wg),
      );
      this.runtime.dispatch(k, [xb, out.buffer!], params, this.#grid(vec4 ? outN / 4 : outN, wg));
    } else if (perOutput) {
      const kahan = op === "sum" && redN >= KAHAN_MIN;
      const k = this.runtime.kernel(
        `reduceT:${op}:${kr}:${rr}:${kahan}`,
        () => reduceThreadKernel(op, kr, rr, kahan),
      );
      this.runtime.dispatch(k, [xb, out.buffer!], params, this.#grid(outN));
    } else {
      const k = this.runtime.kernel(
        `reduceG:${op}:${kr}:${rr}`,
        () => reduceGroupKernel(op, kr, rr),
      );
      this.runtime.dispatch(k, [xb, out.buffer!], params, this.#grid(outN, 1));
    }
    return out;
  }

  matmul(a: Storage, b: Storage, g: MatmulGeom, epilogue?: MatmulEpilogue): Storage {
    const ab = this.#buf(a, "a"), bb = this.#buf(b, "b");
    const rowBufs = (epilogue?.rows ?? []).map((r, i) => {
      if (r.size !== g.n) {
        throw new RangeError(
          `Expected matmul epilogue row ${i} to have n = ${g.n} elements but found ${r.size}`,
        );
      }
      return this.#buf(r, `epilogue row ${i}`);
    });
    const size = g.batch * g.m * g.n;
    if (size === 0) return this.#new(0);
    // k = 0 without an epilogue is zeros; with one, the kernel runs: its accumulators stay 0
    // and the epilogue still applies (e.g. act(0 + bias)).
    if (g.k === 0 && !epilogue) return this.fill(size, 0);
    // A·B with a small B (dz·W in a linear layer's backward pass) on a CPU adapter: transpose
    // B once (one small copy, O(kn) against the product's O(mkn)) and take the uniform-B path
    // of transB products below. Measured on lavapipe at [2048, 256]·[256, 256]: the copy and
    // four chunk dispatches cost less CPU time than one storage-B dispatch.
    if (
      this.#cpuAdapter && !g.transA && !g.transB && this.#matmulOverrides.uniformB !== 0 &&
      this.#matmulOverrides.variant !== "tiled" && g.k * g.n <= NN_TRANSPOSE_MAX &&
      (g.batch === 1 || g.bBatchStride === 0) && uniformChunk({ ...g, transB: true }) > 0
    ) {
      const bt = this.#new(g.k * g.n);
      this.copyInto(bt, { shape: [g.n, g.k], strides: [g.k, 1], offset: 0 }, b, {
        shape: [g.n, g.k],
        strides: [1, g.n],
        offset: 0,
      });
      try {
        return this.matmul(a, bt, { ...g, transB: true, bBatchStride: 0 }, epilogue);
      } finally {
        this.free(bt);
      }
    }
    const out = this.#new(size);
    const epi = epilogue ? { expr: epilogue.expr, rows: epilogue.rows.length } : undefined;
    // buildMatmul generates the whole WGSL source (~180 µs a call for 16×16 blocks, ~2 ms of
    // host time per training step of a 4-layer MLP) before the pipeline cache is consulted,
    // so the key and grid of each geometry (and epilogue) are memoised and the source is made
    // only on a miss. The epilogue enters the memo key as its WGSL, which names every op.
    const gk = `${g.batch},${g.m},${g.n},${g.k},${+g.transA},${+g.transB},${g.aBatchStride},` +
      `${g.bBatchStride}${
        epi ? `/${epi.rows}:${emitExpr([epi.expr], { inline: true }).body}` : ""
      }`;
    let mk = this.#matmuls.get(gk);
    if (!mk) {
      // On CPU adapters a transB product (every linear layer's forward pass) reads B through
      // a uniform binding, one dispatch per chunk of output columns (uniformChunk).
      const nc = this.#cpuAdapter && this.#matmulOverrides.uniformB !== 0 &&
          this.#matmulOverrides.variant !== "tiled"
        ? uniformChunk(g)
        : 0;
      const opts: MatmulBuildOptions = nc
        ? { ...this.#matmulOverrides, lanes: "rows", uniformB: nc, epilogue: epi }
        : { ...this.#matmulOverrides, uniformB: undefined, epilogue: epi };
      const geom = nc ? { ...g, n: nc } : g;
      const built = buildMatmul(geom, this.#adapter, opts);
      mk = { key: built.key, workgroups: built.workgroups, geom, opts, chunk: nc };
      if (this.#matmuls.size >= MATMUL_MEMO_MAX) this.#matmuls.clear();
      this.#matmuls.set(gk, mk);
    }
    const m = mk;
    const k = this.runtime.kernel(
      `matmul:${m.key}`,
      () => buildMatmul(m.geom, this.#adapter, m.opts).code,
    );
    const params = [
      g.batch,
      g.m,
      g.n,
      g.k,
      g.transA ? 1 : 0,
      g.transB ? 1 : 0,
      g.aBatchStride,
      g.bBatchStride,
    ];
    if (!m.chunk) {
      this.runtime.dispatch(k, [ab, bb, out.buffer!, ...rowBufs], params, m.workgroups);
      return out;
    }
    const bytes = m.chunk * g.k * 4;
    for (let c0 = 0; c0 < g.n; c0 += m.chunk) {
      this.runtime.dispatch(
        k,
        [ab, { buffer: bb, offset: c0 * g.k * 4, size: bytes }, out.buffer!, ...rowBufs],
        [...params, c0, c0 + m.chunk, 0, 0],
        m.workgroups,
      );
    }
    return out;
  }

  matmulBiasGrad(a: Storage, b: Storage, m: number, n: number, k: number): [Storage, Storage] {
    return matmulBiasGradByParts(this, a, b, m, n, k);
  }
  matmulOutputs(a: Storage, b: Storage, g: MatmulGeom, outputs: MatmulOutputs): Storage[] {
    // Two dispatches: the product, then one elementwise kernel writing every output (the
    // matmul kernel's epilogue has one output and row vectors only).
    return matmulOutputsByParts(this, a, b, g, outputs);
  }

  copyInto(dst: Storage, dstView: View, src: Storage, srcView: View): void {
    const db = this.#buf(dst, "dst");
    let sb = this.#buf(src, "src");
    const n = prod(srcView.shape);
    if (n === 0) return;
    let temp: GPUBuffer | null = null;
    if (sb === db) {
      // A buffer cannot be bound as read-only and writable in one dispatch: copy it first.
      temp = this.runtime.acquire(sb.size);
      this.runtime.copy(sb, 0, temp, 0, sb.size);
      sb = temp;
    }
    const c = collapseAxes(srcView.shape, [srcView.strides, dstView.strides]);
    const rank = c.shape.length;
    const k = this.runtime.kernel(`copy:${rank}`, () => copyKernel(rank));
    this.runtime.dispatch(k, [sb, db], [
      n,
      u32(srcView.offset),
      u32(dstView.offset),
      ...c.shape,
      ...c.strides[0]!.map(u32),
      ...c.strides[1]!.map(u32),
    ], this.#grid(n));
    if (temp) this.runtime.release(temp);
  }

  gather(x: Storage, shape: readonly number[], axis: number, idx: Storage): Storage {
    const xb = this.#buf(x, "x"), ib = this.#buf(idx, "indices");
    const outer = prod(shape.slice(0, axis)), inner = prod(shape.slice(axis + 1));
    const dim = shape[axis]!, n = idx.size;
    const outN = outer * n * inner;
    const out = this.#new(outN);
    if (outN === 0) return out;
    const k = this.runtime.kernel("gather", gatherKernel);
    this.runtime.dispatch(k, [xb, ib, out.buffer!], [outN, n, dim, inner], this.#grid(outN));
    return out;
  }

  scatterAdd(
    src: Storage,
    srcShape: readonly number[],
    axis: number,
    idx: Storage,
    dimSize: number,
  ): Storage {
    const sb = this.#buf(src, "src"), ib = this.#buf(idx, "indices");
    const outer = prod(srcShape.slice(0, axis)), inner = prod(srcShape.slice(axis + 1));
    const n = srcShape[axis]!;
    const outN = outer * dimSize * inner;
    if (outN === 0) return this.#new(0);
    if (n === 0) return this.fill(outN, 0);
    const out = this.#new(outN);
    const k = this.runtime.kernel("scatterAdd", scatterAddKernel);
    this.runtime.dispatch(k, [sb, ib, out.buffer!], [outN, n, dimSize, inner], this.#grid(outN));
    return out;
  }

  /**
   * @internal Force the `logSumExpAdd` strategy (tests, benchmarks): one invocation per output
   * (`"thread"`) or one workgroup per output (`"group"`); by default CPU adapters use threads.
   */
  lseStrategy: "thread" | "group" | undefined = undefined;

  logSumExpAdd(
    x: Storage,
    v: Storage,
    rows: number,
    cols: number,
    axis: 0 | 1,
    scale = 1,
    shift = 0,
  ): Storage {
    const xb = this.#buf(x, "x"), vb = this.#buf(v, "v");
    const outN = axis === 1 ? rows : cols;
    const out = this.#new(outN);
    if (outN === 0) return out;
    // Measured on lavapipe, [1024, 1024]: threads read each line once without barriers and
    // win there; workgroups with a shared-memory merge keep GPUs busy when lines are few.
    const group = (this.lseStrategy ?? (this.#cpuAdapter ? "thread" : "group")) === "group";
    const params = [rows, cols, f32Bits(scale), f32Bits(shift)];
    const bufs = [xb, vb, out.buffer!];
    const vec4 = cols % 4 === 0;
    if (axis === 1 && group) {
      const k = this.runtime.kernel("lseRowG", lseRowGroupKernel);
      this.runtime.dispatch(k, bufs, params, this.#grid(rows, 1));
    } else if (axis === 1) {
      const wg = this.#cpuAdapter ? 8 : 64;
      const k = this.runtime.kernel(`lseRowT:${vec4}:${wg}`, () => lseRowThreadKernel(vec4, wg));
      this.runtime.dispatch(k, bufs, params, this.#grid(rows, wg));
    } else if (group) {
      const k = this.runtime.kernel("lseColG", lseColGroupKernel);
      this.runtime.dispatch(k, bufs, params, this.#grid(cols, LSE_COL_TILE[0]));
    } else {
      const wg = this.#cpuAdapter ? 8 : 64;
      const k = this.runtime.kernel(`lseColT:${vec4}:${wg}`, () => lseColThreadKernel(vec4, wg));
      this.runtime.dispatch(k, bufs, params, this.#grid(vec4 ? cols / 4 : cols, wg));
    }
    return out;
  }

  /**
   * @internal Rows per invocation of the attention kernels (tests, benchmarks): `[forward,
   * query pass, key pass]`; by default chosen by {@linkcode attentionRows} per adapter.
   */
  attentionRowsOverride: [number, number, number] | undefined = undefined;

  #attentionShape(n: number, d: number, pass: 0 | 1 | 2) {
    // Measured on lavapipe at DiT-tiny's shape (49 tokens, d = 32): 7 rows per invocation in
    // all three passes (one SIMD chunk of 8 invocations per workgroup); GPUs get more, smaller
    // invocations.
    const rows = this.attentionRowsOverride?.[pass] ??
      (this.#cpuAdapter ? attentionRows(n, 4, 8) : attentionRows(n, 1, 4));
    return { d, rows, wg: this.#cpuAdapter ? 8 : 64 };
  }

  attention(
    qkv: Storage,
    b: number,
    n: number,
    heads: number,
    d: number,
    scale: number,
  ): [Storage, Storage] {
    const x = this.#buf(qkv, "qkv");
    const o = this.#new(b * n * heads * d), lse = this.#new(b * heads * n);
    if (o.size === 0) return [o, lse];
    const sh = this.#attentionShape(n, d, 0);
    const blocks = Math.ceil(n / sh.rows);
    const k = this.runtime.kernel(
      `attnF:${d}:${sh.rows}:${sh.wg}`,
      () => attentionForwardKernel(sh),
    );
    this.runtime.dispatch(
      k,
      [x, o.buffer!, lse.buffer!],
      [b, n, heads, blocks, f32Bits(scale)],
      this.#grid(b * heads * blocks, sh.wg),
    );
    return [o, lse];
  }

  attentionBackward(
    qkv: Storage,
    o: Storage,
    lse: Storage,
    dO: Storage,
    b: number,
    n: number,
    heads: number,
    d: number,
    scale: number,
  ): Storage {
    const x = this.#buf(qkv, "qkv"), ob = this.#buf(o, "o"), lb = this.#buf(lse, "lse");
    const g = this.#buf(dO, "dO");
    const dx = this.#new(3 * b * n * heads * d);
    if (dx.size === 0) return dx;
    const dv = this.#new(b * heads * n); // D = rowsum(dO ⊙ O), from the query pass
    const shQ = this.#attentionShape(n, d, 1), shK = this.#attentionShape(n, d, 2);
    const bq = Math.ceil(n / shQ.rows), bk = Math.ceil(n / shK.rows);
    const kq = this.runtime.kernel(
      `attnBQ:${d}:${shQ.rows}:${shQ.wg}`,
      () => attentionBackwardQKernel(shQ),
    );
    this.runtime.dispatch(
      kq,
      [x, ob, lb, g, dx.buffer!, dv.buffer!],
      [b, n, heads, bq, f32Bits(scale)],
      this.#grid(b * heads * bq, shQ.wg),
    );
    const kk = this.runtime.kernel(
      `attnBKV:${d}:${shK.rows}:${shK.wg}`,
      () => attentionBackwardKVKernel(shK),
    );
    this.runtime.dispatch(
      kk,
      [x, lb, g, dv.buffer!, dx.buffer!],
      [b, n, heads, bk, f32Bits(scale)],
      this.#grid(b * heads * bk, shK.wg),
    );
    this.free(dv); // the pool hands it out again only after this work is submitted
    return dx;
  }

  layerNormModulate(
    x: Storage,
    shift: Storage,
    scale: Storage,
    b: number,
    t: number,
    d: number,
    eps: number,
  ): [Storage, Storage] {
    const xb = this.#buf(x, "x"), shb = this.#buf(shift, "shift"), scb = this.#buf(scale, "scale");
    const rows = b * t;
    const y = this.#new(rows * d), st = this.#new(2 * rows);
    if (rows === 0) return [y, st];
    const vec4 = d % 4 === 0, wg = this.#cpuAdapter ? 8 : 64;
    const k = this.runtime.kernel(`lnModF:${vec4}:${wg}`, () => lnModForwardKernel(vec4, wg));
    this.runtime.dispatch(
      k,
      [xb, shb, scb, y.buffer!, st.buffer!],
      [rows, t, vec4 ? d / 4 : d, d, f32Bits(eps)],
      this.#grid(rows, wg),
    );
    return [y, st];
  }

  layerNormModulateBackward(
    x: Storage,
    scale: Storage,
    stats: Storage,
    dy: Storage,
    b: number,
    t: number,
    d: number,
    acc?: Storage,
  ): [Storage, Storage, Storage] {
    if (acc) {
      // The sum as its own dispatch (what the tape's add was): the rows kernel stays as it is.
      const [dx0, dsh, dsc] = this.layerNormModulateBackward(x, scale, stats, dy, b, t, d);
      const [i0, i1]: Expr[] = [0, 1].map((index) => ({ kind: "input", index }));
      const [dx] = this.elementwise(
        [{ kind: "binary", op: "add", a: i0!, b: i1! }],
        [dx0, acc],
        [[1], [1]],
        [b * t * d],
      );
      this.free(dx0);
      return [dx!, dsh, dsc];
    }
    const xb = this.#buf(x, "x"), scb = this.#buf(scale, "scale");
    const stb = this.#buf(stats, "stats"), gb = this.#buf(dy, "dy");
    const rows = b * t;
    const dx = this.#new(rows * d);
    // An empty token axis still has (zero) token sums.
    if (rows === 0 || d === 0) return [dx, this.fill(b * d, 0), this.fill(b * d, 0)];
    const dsh = this.#new(b * d), dsc = this.#new(b * d);
    const vec4 = d % 4 === 0, wg = this.#cpuAdapter ? 8 : 64, dw = vec4 ? d / 4 : d;
    const kr = this.runtime.kernel(
      `lnModBR:${vec4}:${wg}`,
      () => lnModBackwardRowsKernel(vec4, wg),
    );
    this.runtime.dispatch(
      kr,
      [xb, scb, stb, gb, dx.buffer!],
      [rows, t, dw, d],
      this.#grid(rows, wg),
    );
    const kc = this.runtime.kernel(
      `lnModBC:${vec4}:${wg}`,
      () => lnModBackwardColsKernel(vec4, wg),
    );
    this.runtime.dispatch(
      kc,
      [xb, stb, gb, dsh.buffer!, dsc.buffer!],
      [b * dw, t, dw],
      this.#grid(b * dw, wg),
    );
    return [dx, dsh, dsc];
  }

  gatedResidualBackward(
    g: Storage,
    a: Storage,
    dy: Storage,
    b: number,
    t: number,
    d: number,
  ): [Storage, Storage] {
    // The unfused ops' kernels (g·dy and a·dy in one elementwise dispatch, then the token sum):
    // two dispatches, as before the fused op existed.
    const shape = [b, t, d], dense = [t * d, d, 1];
    const [ga, gd, gy]: Expr[] = [0, 1, 2].map((index) => ({ kind: "input", index }));
    const [da, ady] = this.elementwise(
      [
        { kind: "binary", op: "mul", a: ga!, b: gy! },
        { kind: "binary", op: "mul", a: gd!, b: gy! },
      ],
      [g, a, dy],
      [[d, 0, 1], dense, dense],
      shape,
    ) as [Storage, Storage];
    const dg = this.reduce("sum", ady, shape, [1]);
    this.free(ady);
    return [da, dg];
  }

  random(kind: RandomKind, size: number, state: RandomState): Storage {
    const out = this.#new(size);
    if (size === 0) return out;
    const blocks = randomBlocks(kind, size);
    const k = this.runtime.kernel(`random:${kind}`, () => randomKernel(kind));
    this.runtime.dispatch(
      k,
      [out.buffer!],
      [
        size,
        blocks,
        u32(state.counter[0]),
        u32(state.counter[1]),
        u32(state.key[0]),
        u32(state.key[1]),
      ],
      this.#grid(blocks),
      dynCounter(state),
    );
    return out;
  }
}

/**
 * Create the WebGPU backend on the best adapter. Rejects with a message naming what is
 * missing (no `navigator.gpu`, no adapter).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createWebGPUBackend } from "./webgpu.ts";
 * const be = await createWebGPUBackend().catch(() => null); // null when there is no adapter
 * // e.g. "webgpu: llvmpipe (LLVM 15.0.6, 256 bits) [fallback]"
 * if (be) assert.ok(be.name === "webgpu" && be.description.startsWith("webgpu: "));
 * ```
 */
export async function createWebGPUBackend(opts: RuntimeOptions = {}): Promise<WebGPUBackend> {
  return new WebGPUBackend(await GpuRuntime.create(opts));
}
