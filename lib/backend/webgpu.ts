/**
 * @file The WebGPU backend: every `Backend` method as WGSL compute kernels recorded through
 * the batching runtime in lib/device. Semantics follow lib/backend/cpu.ts (the living spec)
 * with two documented exceptions forced by kernels that cannot throw: `gather` yields NaN for
 * an out-of-range or non-integer index and `scatterAdd` ignores it (the CPU throws).
 * @module
 */
import {
  type Backend,
  BINARY,
  type BinaryOp,
  type FusedExpr,
  type MatmulGeom,
  randomBlocks,
  type RandomKind,
  type RandomState,
  type ReduceOp,
  type Storage,
  UNARY,
  type UnaryOp,
  type View,
  WGSL_HELPERS,
  WGSL_PHILOX,
} from "./backend.ts";
import {
  f32Bits,
  GpuRuntime,
  grid1d,
  type RuntimeOptions,
  type RuntimeStats,
} from "../device/runtime.ts";
import { collapseAxes, pf, WG } from "../../kernels/common.ts";
import {
  copyKernel,
  fillKernel,
  type InputMode,
  iotaKernel,
  mapKernel,
  mapParamWords,
  unaryKernel,
} from "../../kernels/elementwise.ts";
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
import { fusedGroupsKernel, fusedGroupsParamWords } from "../../kernels/fused_groups.ts";
import { buildMatmul, isCpuAdapter } from "../../kernels/matmul.ts";
import { stridesOf } from "../shape.ts";

/**
 * WebGPU storage: a pooled GPU buffer (null once freed).
 *
 * @example
 * ```ts
 * import { backendByName } from "../../mod.ts";
 * import { GpuStorage } from "./webgpu.ts";
 * const be = backendByName("webgpu");
 * if (be && !(be.alloc(4) instanceof GpuStorage)) throw new Error("bad");
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
// On CPU adapters, fusedGroups gives groups of at least this many elements their own dispatch.
const GROUP_OWN_DISPATCH = 8192;
// Loops longer than this use Kahan summation.
const KAHAN_MIN = 4096;

/**
 * WGSL for a fused DAG with every scalar (constants, unary p0/p1) read from parameter words
 * `base, base+1, …` instead of inlined into the source: the source, and so the
 * pipeline, then depends only on the DAG's structure, so an optimizer whose step size or
 * bias correction changes every step reuses one pipeline instead of compiling one per step.
 */
function emitFusedParams(
  outputs: readonly FusedExpr[],
  base: number,
): { body: string; outs: string[]; scalars: number[] } {
  const names = new Map<FusedExpr, string>();
  const lines: string[] = [];
  const scalars: number[] = [];
  let next = 0;
  const scalar = (v: number) => {
    scalars.push(v);
    return pf(base + scalars.length - 1);
  };
  const visit = (e: FusedExpr): string => {
    const have = names.get(e);
    if (have) return have;
    let line: string;
    let name: string;
    switch (e.kind) {
      case "input":
        return `in${e.index}`;
      case "const":
        name = `v${next++}`;
        line = `let ${name}: f32 = ${scalar(e.value)};`;
        break;
      case "unary": {
        const x = visit(e.x);
        name = `v${next++}`;
        line = `var ${name}: f32; { let x = ${x}; let p0 = ${scalar(e.p0)}; let p1 = ${
          scalar(e.p1)
        }; ${name} = ${UNARY[e.op].wgsl}; }`;
        break;
      }
      case "binary": {
        const a = visit(e.a), b = visit(e.b);
        name = `v${next++}`;
        line = `var ${name}: f32; { let a = ${a}; let b = ${b}; ${name} = ${BINARY[e.op].wgsl}; }`;
        break;
      }
      case "where": {
        const c = visit(e.c), a = visit(e.a), b = visit(e.b);
        name = `v${next++}`;
        // Nonzero on the bits: a NaN condition picks `a`, as on the CPU.
        line = `let ${name}: f32 = select(${b}, ${a}, (bitcast<u32>(${c}) & 0x7fffffffu) != 0u);`;
        break;
      }
    }
    names.set(e, name);
    lines.push(line);
    return name;
  };
  const outs = outputs.map(visit);
  return { body: lines.join("\n"), outs, scalars };
}

/**
 * The WebGPU backend. Create it with `createWebGPUBackend()`; `lib/backend/select.ts` does so
 * at import and falls back to the CPU backend when it rejects.
 *
 * @example
 * ```ts
 * import { backendByName } from "../../mod.ts";
 * const be = backendByName("webgpu"); // undefined without an adapter
 * if (be) {
 *   const s = be.upload(new Float32Array([1, 2, 3]));
 *   const y = be.unary("square", s, 0, 0);
 *   console.log(await be.read(y)); // Float32Array [1, 4, 9]
 *   be.free(s);
 *   be.free(y);
 * }
 * ```
 */
export class WebGPUBackend implements Backend {
  readonly name = "webgpu" as const;
  readonly description: string;
  /** The runtime (device, pool, batching). */
  readonly runtime: GpuRuntime;
  #live = 0;
  #cpuAdapter: boolean;
  #registry: FinalizationRegistry<{ buf: GPUBuffer; bytes: number }>;
  #adapter: { isFallback: boolean; description: string };
  #matmuls = new Map<string, { key: string; workgroups: [number, number, number] }>();
  /**
   * `fusedGroups` gives each group of ≥ 8192 elements a dispatch of its own (default: on CPU
   * adapters, where a grouped kernel's branches all run masked; see `fusedGroups`).
   */
  fusedGroupsSplitLarge: boolean;

  /** @internal Use `createWebGPUBackend`. */
  constructor(rt: GpuRuntime) {
    this.runtime = rt;
    this.#adapter = { isFallback: rt.isFallback, description: rt.adapterDescription };
    this.#cpuAdapter = isCpuAdapter(this.#adapter);
    this.fusedGroupsSplitLarge = this.#cpuAdapter;
    this.description = `webgpu: ${rt.adapterDescription}${rt.isFallback ? " [fallback]" : ""}`;
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

  flush(): void {
    this.runtime.flush();
  }

  sync(): Promise<void> {
    return this.runtime.sync();
  }

  /** Counters: submits, dispatches, pool and live bytes (see `RuntimeStats`). */
  stats(): WebGPUStats {
    return { ...this.runtime.stats(), liveBytes: this.#live };
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

  unary(op: UnaryOp, x: Storage, p0: number, p1: number): Storage {
    const xb = this.#buf(x, "x");
    const spec = UNARY[op];
    if (!spec) throw new RangeError(`Unknown unary op "${op}"`);
    const n = x.size;
    const out = this.#new(n);
    if (n > 0) {
      const k = this.runtime.kernel(
        `unary4:${op}`,
        () => unaryKernel(spec.wgsl, WGSL_HELPERS, true),
      );
      this.runtime.dispatch(
        k,
        [xb, out.buffer!],
        [n, f32Bits(p0), f32Bits(p1)],
        this.#grid(Math.ceil(n / 4)),
      );
    }
    return out;
  }

  // One n-input, m-output elementwise kernel over `outShape`; inputs read through strides.
  #map(
    key: string,
    inputs: readonly Storage[],
    strides: readonly (readonly number[])[],
    outShape: readonly number[],
    body: string | ((base: number) => { body: string; outs: string[]; scalars: number[] }),
    outs: readonly string[] = [],
  ): GpuStorage[] {
    const bufs = inputs.map((s, i) => this.#buf(s, `input ${i}`));
    const n = prod(outShape);
    const res = outs.map(() => this.#new(n));
    if (n === 0) return res;
    const c = collapseAxes(outShape, [stridesOf(outShape), ...strides]);
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
    // Without strided inputs each invocation handles four elements (see unaryKernel).
    const vec4 = !modes.includes("strided");
    const rowLen = c.shape[last] ?? 1;
    const rowPow2 = (modes.includes("row") || modes.includes("row4")) &&
      (rowLen & (rowLen - 1)) === 0;
    let code: () => string;
    if (typeof body === "function") {
      const e = body(mapParamWords(rank, modes));
      params.push(...e.scalars.map(f32Bits));
      key = `${key}:${e.body}:${e.outs.join(",")}`;
      code = () =>
        mapKernel({
          helpers: WGSL_HELPERS,
          modes,
          rank,
          body: e.body,
          outs: e.outs,
          extraWords: e.scalars.length,
          vec4,
          rowPow2,
        });
    } else {
      const b = body;
      code = () => mapKernel({ helpers: WGSL_HELPERS, modes, rank, body: b, outs, vec4, rowPow2 });
    }
    const k = this.runtime.kernel(
      `map:${key}:${modes.join(",")}:${rank}${rowPow2 ? ":p2" : ""}`,
      code,
    );
    this.runtime.dispatch(
      k,
      [...bufs, ...res.map((r) => r.buffer!)],
      params,
      this.#grid(vec4 ? Math.ceil(n / 4) : n),
    );
    return res;
  }

  binary(
    op: BinaryOp,
    a: Storage,
    aStrides: readonly number[],
    b: Storage,
    bStrides: readonly number[],
    outShape: readonly number[],
  ): Storage {
    const spec = BINARY[op];
    if (!spec) throw new RangeError(`Unknown binary op "${op}"`);
    return this.#map(
      `binary:${op}`,
      [a, b],
      [aStrides, bStrides],
      outShape,
      "let a = in0; let b = in1;",
      [spec.wgsl],
    )[0]!;
  }

  where(
    c: Storage,
    cStrides: readonly number[],
    a: Storage,
    aStrides: readonly number[],
    b: Storage,
    bStrides: readonly number[],
    outShape: readonly number[],
  ): Storage {
    return this.#map(
      "where",
      [c, a, b],
      [cStrides, aStrides, bStrides],
      outShape,
      // Nonzero on the bits, so a NaN condition picks `a` as on the CPU (WGSL compilers may
      // assume comparisons never see NaN).
      "",
      ["select(in2, in1, (bitcast<u32>(in0) & 0x7fffffffu) != 0u)"],
    )[0]!;
  }

  fused(
    outputs: readonly FusedExpr[],
    inputs: readonly Storage[],
    inputStrides: readonly (readonly number[])[],
    outShape: readonly number[],
  ): Storage[] {
    if (inputs.length + outputs.length > this.runtime.maxStorageBuffers) {
      return this.#fusedEager(outputs, inputs, inputStrides, outShape);
    }
    return this.#map(
      "fused",
      inputs,
      inputStrides,
      outShape,
      (base) => emitFusedParams(outputs, base),
      outputs.map(() => ""), // one output storage each; the emitter supplies the expressions
    );
  }

  fusedGroups(
    outputs: readonly FusedExpr[],
    groups: readonly { readonly inputs: readonly Storage[]; readonly size: number }[],
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
    const per = Math.floor((this.runtime.maxStorageBuffers - ns) / (k + fresh));
    if (per < 1) {
      for (const i of live) {
        const g = groups[i]!;
        const outs = this.fused(
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
    const large = (i: number) =>
      this.fusedGroupsSplitLarge && groups[i]!.size >= GROUP_OWN_DISPATCH;
    const chunks: number[][] = live.filter(large).map((i) => [i]);
    const small = live.filter((i) => !large(i));
    for (let c = 0; c < small.length; c += per) chunks.push(small.slice(c, c + per));
    for (const chunk of chunks) {
      const G = chunk.length;
      const e = emitFusedParams(outputs, fusedGroupsParamWords(G));
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
      );
    }
    return res;
  }

  // More buffers than one kernel may bind: evaluate node by node on contiguous temporaries.
  #fusedEager(
    outputs: readonly FusedExpr[],
    inputs: readonly Storage[],
    inputStrides: readonly (readonly number[])[],
    outShape: readonly number[],
  ): Storage[] {
    const n = prod(outShape);
    const dense = stridesOf(outShape);
    const memo = new Map<FusedExpr, Storage>();
    const temps: Storage[] = [];
    const ev = (e: FusedExpr): Storage => {
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
          s = this.fill(n, e.value);
          break;
        case "unary":
          s = this.unary(e.op, ev(e.x), e.p0, e.p1);
          break;
        case "binary":
          s = this.binary(e.op, ev(e.a), dense, ev(e.b), dense, outShape);
          break;
        case "where":
          s = this.where(ev(e.c), dense, ev(e.a), dense, ev(e.b), dense, outShape);
          break;
      }
      memo.set(e, s);
      temps.push(s);
      return s;
    };
    // Each output is a fresh copy, so freeing the temporaries never frees a result.
    const res = outputs.map((o) => this.unary("copy", ev(o), 0, 0));
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

  matmul(a: Storage, b: Storage, g: MatmulGeom): Storage {
    const ab = this.#buf(a, "a"), bb = this.#buf(b, "b");
    const size = g.batch * g.m * g.n;
    if (size === 0 || g.k === 0) return this.fill(size, 0);
    const out = this.#new(size);
    // buildMatmul generates the whole WGSL source (~180 µs a call for 16×16 blocks, ~2 ms of
    // host time per training step of a 4-layer MLP) before the pipeline cache is consulted,
    // so the key and grid of each geometry are memoised and the source is made only on a miss.
    const gk = `${g.batch},${g.m},${g.n},${g.k},${+g.transA},${+g.transB},${g.aBatchStride},` +
      g.bBatchStride;
    let mk = this.#matmuls.get(gk);
    if (!mk) {
      const built = buildMatmul(g, this.#adapter);
      mk = { key: built.key, workgroups: built.workgroups };
      if (this.#matmuls.size >= MATMUL_MEMO_MAX) this.#matmuls.clear();
      this.#matmuls.set(gk, mk);
    }
    const k = this.runtime.kernel(`matmul:${mk.key}`, () => buildMatmul(g, this.#adapter).code);
    this.runtime.dispatch(k, [ab, bb, out.buffer!], [
      g.batch,
      g.m,
      g.n,
      g.k,
      g.transA ? 1 : 0,
      g.transB ? 1 : 0,
      g.aBatchStride,
      g.bBatchStride,
    ], mk.workgroups);
    return out;
  }

  matmulEpilogue(
    a: Storage,
    b: Storage,
    g: MatmulGeom,
    bias: Storage | null,
    act: UnaryOp | null,
  ): Storage {
    const ab = this.#buf(a, "a"), bb = this.#buf(b, "b");
    const biasB = bias ? this.#buf(bias, "bias") : null;
    const size = g.batch * g.m * g.n;
    if (size === 0) return this.fill(0, 0);
    if (act !== null && !UNARY[act]) throw new RangeError(`Unknown unary op "${act}"`);
    // k = 0 needs no special case (unlike matmul's fill): the accumulators stay 0 and the
    // epilogue still applies act(0 + bias).
    const out = this.#new(size);
    const epilogue = {
      bias: biasB !== null,
      act,
      actWgsl: act ? UNARY[act].wgsl : undefined,
      helpers: WGSL_HELPERS,
    };
    const gk = `${g.batch},${g.m},${g.n},${g.k},${+g.transA},${+g.transB},${g.aBatchStride},` +
      `${g.bBatchStride}/epi:${+!!biasB}:${act}`;
    let mk = this.#matmuls.get(gk);
    if (!mk) {
      const built = buildMatmul(g, this.#adapter, { epilogue });
      mk = { key: built.key, workgroups: built.workgroups };
      if (this.#matmuls.size >= MATMUL_MEMO_MAX) this.#matmuls.clear();
      this.#matmuls.set(gk, mk);
    }
    const k = this.runtime.kernel(
      `matmul:${mk.key}`,
      () => buildMatmul(g, this.#adapter, { epilogue }).code,
    );
    const bufs = biasB ? [ab, bb, out.buffer!, biasB] : [ab, bb, out.buffer!];
    this.runtime.dispatch(k, bufs, [
      g.batch,
      g.m,
      g.n,
      g.k,
      g.transA ? 1 : 0,
      g.transB ? 1 : 0,
      g.aBatchStride,
      g.bBatchStride,
    ], mk.workgroups);
    return out;
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

  random(kind: RandomKind, size: number, state: RandomState): Storage {
    const out = this.#new(size);
    if (size === 0) return out;
    const blocks = randomBlocks(kind, size);
    const k = this.runtime.kernel(`random:${kind}`, () => randomKernel(kind, WGSL_PHILOX));
    this.runtime.dispatch(k, [out.buffer!], [
      size,
      blocks,
      u32(state.counter[0]),
      u32(state.counter[1]),
      u32(state.key[0]),
      u32(state.key[1]),
    ], this.#grid(blocks));
    return out;
  }
}

/**
 * Create the WebGPU backend on the best adapter. Rejects with a message naming what is
 * missing (no `navigator.gpu`, no adapter).
 *
 * @example
 * ```ts
 * import { createWebGPUBackend } from "./webgpu.ts";
 * const be = await createWebGPUBackend().catch((e) => (console.log(e.message), null));
 * if (be) console.log(be.description); // e.g. "webgpu: llvmpipe (LLVM 15.0.6, 256 bits) [fallback]"
 * ```
 */
export async function createWebGPUBackend(opts: RuntimeOptions = {}): Promise<WebGPUBackend> {
  return new WebGPUBackend(await GpuRuntime.create(opts));
}
