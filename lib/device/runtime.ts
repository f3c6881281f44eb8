/**
 * @file The WebGPU runtime: adapter and device, limits, the buffer pool, the pipeline cache,
 * command batching and device-lost handling. Kernels reach the GPU only through `dispatch`.
 *
 * Batching: every dispatch is recorded into ONE command encoder (and one compute pass while
 * possible) until a readback, `flush()`, or the batch limit; never one submit per op (on
 * lavapipe a submit costs ~5x a dispatch in a shared pass). `queue.writeBuffer` runs on the
 * queue timeline *before* the unsubmitted encoder, so nothing pending is ever written that
 * way: uploads go into pooled buffers that no unsubmitted work can read (released before the
 * last submit) or else fresh `mappedAtCreation` ones, and per-dispatch parameters are
 * appended to a CPU-side uniform arena that is written once, right before its submit.
 * @module
 */
import { BufferPool, sizeClass, STORAGE_USAGE } from "./pool.ts";
import { type CaptureHooks, setCaptureHooks, type TraceEnv } from "../capture.ts";
import {
  type CapOp,
  type CapturedStep,
  type DynWord,
  StepTrace,
  type TraceParts,
} from "./trace.ts";

/** A compiled kernel: its pipeline and bind-group layout. */
export interface Kernel {
  /** The compute pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Its bind-group layout (group 0). */
  readonly layout: GPUBindGroupLayout;
  /** The cache key (the WGSL source unless given). */
  readonly key: string;
}

/** Counters the runtime exposes for tests and benchmarks. */
export interface RuntimeStats {
  /** Queue submits since creation. */
  submits: number;
  /** Dispatches recorded since creation. */
  dispatches: number;
  /** Dispatches recorded in the current, unsubmitted batch. */
  pendingDispatches: number;
  /** Readbacks started. */
  reads: number;
  /** Distinct pipelines compiled. */
  pipelines: number;
  /** Bytes held by buffers waiting in the pool. */
  pooledBytes: number;
  /** Storage buffers created (not served from the pool). */
  buffersCreated: number;
  /** Storage-buffer acquisitions served from the pool. */
  buffersReused: number;
  /** Uploads (`upload` calls). */
  uploads: number;
  /** Uploads that created a buffer (the rest reused an idle pooled one). */
  uploadsCreated: number;
}

/** Options of `GpuRuntime.create`. */
export interface RuntimeOptions {
  /** Submit automatically after this many recorded dispatches (default 512). */
  maxBatchDispatches?: number;
  /** The most bytes the buffer pool retains (default 512 MiB, at most a quarter of maxBufferSize). */
  poolCapBytes?: number;
}

const ARENA_BYTES = 1 << 18;
const MAP_READ = 0x01, COPY_DST = 0x08, UNIFORM = 0x40;
const f32s = new Float32Array(1);
const u32s = new Uint32Array(f32s.buffer);

/**
 * The bits of `x` as an f32, for passing floats through the u32 parameter words.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { f32Bits } from "./runtime.ts";
 * // IEEE 754 binary32: 1 = sign 0, exponent 127, mantissa 0; −2 = sign 1, exponent 128.
 * assert.equal(f32Bits(1), 127 << 23);
 * assert.equal(f32Bits(-2), (0x80000000 | (128 << 23)) >>> 0);
 * ```
 */
export function f32Bits(x: number): number {
  f32s[0] = x;
  return u32s[0]!;
}

/**
 * A dispatch grid for `n` workgroups along one logical axis that respects
 * `maxComputeWorkgroupsPerDimension`: it spills into y, and kernels rebuild the linear
 * workgroup index as `wid.x + wid.y * num_workgroups.x`, guarding the tail.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { grid1d } from "./runtime.ts";
 * const [x, y, z] = grid1d(100000, 65535);
 * assert.ok(x * y >= 100000 && x <= 65535 && z === 1);
 * assert.deepEqual(grid1d(10, 65535), [10, 1, 1]);
 * ```
 */
export function grid1d(n: number, maxPerDim: number): [number, number, number] {
  if (n <= maxPerDim) return [Math.max(n, 1), 1, 1];
  const y = Math.ceil(n / maxPerDim);
  if (y > maxPerDim) {
    throw new RangeError(
      `Expected at most ${maxPerDim * maxPerDim} workgroups for one dispatch but found ${n}`,
    );
  }
  return [Math.ceil(n / y), y, 1];
}

/**
 * Make WGSL portable to compilers that evaluate constant expressions strictly. Tint
 * (Chrome's WGSL compiler) rejects `bitcast<f32>(0x7f800000u)` — a constant expression
 * whose value (±inf, NaN) "cannot be represented as f32" — where naga (Deno's wgpu) accepts
 * it. A `bitcast<f32>` of a literal or of an upper-case constant is routed through an
 * identity function, so it is evaluated at run time and yields the same bits on both.
 *
 * @example
 * ```ts
 * import { portableWgsl } from "./runtime.ts";
 * import { strict as assert } from "node:assert";
 * const out = portableWgsl("fn f() -> f32 { return bitcast<f32>(0x7f800000u); }");
 * assert.ok(out.includes("bitcast<f32>(fg_runtime_u32(0x7f800000u))"));
 * assert.equal(portableWgsl("fn g(x: u32) -> f32 { return bitcast<f32>(x); }").includes("fg_runtime"), false);
 * ```
 */
export function portableWgsl(code: string): string {
  const re = /bitcast<f32>\(\s*(0x[0-9a-fA-F]+u|[A-Z][A-Z0-9_]*)\s*\)/g;
  if (!re.test(code)) return code;
  return code.replace(re, "bitcast<f32>(fg_runtime_u32($1))") +
    "\nfn fg_runtime_u32(x: u32) -> u32 { return x; }\n";
}

/**
 * The WebGPU runtime. Create it with `GpuRuntime.create()`; the WebGPU backend is built on it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { GpuRuntime } from "./runtime.ts";
 * const rt = await GpuRuntime.create().catch(() => null); // null when there is no adapter
 * if (rt) {
 *   const k = rt.kernel("example:pi", `
 *     @group(0) @binding(0) var<storage, read_write> o: array<f32>;
 *     struct P { v: array<vec4<u32>, 1> }
 *     @group(0) @binding(1) var<uniform> p: P;
 *     @compute @workgroup_size(1) fn main() { o[0] = bitcast<f32>(p.v[0].x); }`);
 *   const buf = rt.acquire(4);
 *   rt.dispatch(k, [buf], [0x40490fdb], [1, 1, 1]);
 *   const out = new Float32Array(await rt.read(buf, 4));
 *   assert.equal(out[0], Math.fround(Math.PI)); // 0x40490fdb is π rounded to f32
 *   rt.release(buf);
 *   rt.destroy();
 * }
 * ```
 */
export class GpuRuntime {
  /** The device. */
  readonly device: GPUDevice;
  /** The adapter's description, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`. */
  readonly adapterDescription: string;
  /** Whether the adapter is a fallback (software) adapter. */
  readonly isFallback: boolean;
  /** `maxComputeWorkgroupsPerDimension` of the device. */
  readonly maxWorkgroupsPerDim: number;
  /** `maxStorageBufferBindingSize` of the device (bytes). */
  readonly maxBindingBytes: number;
  /** `maxStorageBuffersPerShaderStage` of the device. */
  readonly maxStorageBuffers: number;
  /** Submit after this many dispatches in a batch. */
  readonly maxBatchDispatches: number;

  #lost: string | null = null;
  #pendingError: string | null = null;
  #waiters = new Set<(e: Error) => void>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #arena = new ArrayBuffer(ARENA_BYTES);
  #arenaU32 = new Uint32Array(this.#arena);
  #arenaUsed = 0;
  #uniform: GPUBuffer;
  #align: number;
  #batch = 0;
  #toDestroy: GPUBuffer[] = [];
  #kernels = new Map<string, Kernel>();
  #pool: BufferPool<GPUBuffer>;
  #stats = { submits: 0, dispatches: 0, reads: 0, uploads: 0, uploadsCreated: 0 };
  #cap: Capture | null = null;
  #traces = new Set<StepTrace>();

  private constructor(adapter: GPUAdapter, device: GPUDevice, opts: RuntimeOptions) {
    this.device = device;
    const info = adapter.info;
    this.adapterDescription = info.description ||
      [info.vendor, info.architecture, info.device].filter((s) => s).join(" ") || "unknown";
    // `isFallbackAdapter` moved from the adapter to its info; read either.
    type Fb = { isFallbackAdapter?: boolean };
    this.isFallback = Boolean(
      (info as unknown as Fb).isFallbackAdapter ?? (adapter as unknown as Fb).isFallbackAdapter,
    );
    const lim = device.limits;
    this.maxWorkgroupsPerDim = lim.maxComputeWorkgroupsPerDimension;
    this.maxBindingBytes = lim.maxStorageBufferBindingSize;
    this.maxStorageBuffers = lim.maxStorageBuffersPerShaderStage;
    this.#align = lim.minUniformBufferOffsetAlignment;
    this.maxBatchDispatches = opts.maxBatchDispatches ?? 512;
    this.#uniform = device.createBuffer({ size: ARENA_BYTES, usage: UNIFORM | COPY_DST });
    const cap = opts.poolCapBytes ?? Math.min(512 * 2 ** 20, lim.maxBufferSize / 4);
    this.#pool = new BufferPool<GPUBuffer>(
      (bytes) => device.createBuffer({ size: bytes, usage: STORAGE_USAGE }),
      (b) => this.#destroyLater(b),
      cap,
      this.maxBindingBytes,
      // A buffer released while an encoder is open may be read by that encoder's work: it is
      // safe to overwrite from the queue once that encoder is submitted.
      {
        releaseMark: () => this.#stats.submits + (this.#encoder ? 1 : 0),
        now: () => this.#stats.submits,
      },
    );
    device.lost.then((info) => {
      this.#markLost(`${info.reason ?? "unknown"}: ${info.message || "no message"}`);
    });
    device.addEventListener("uncapturederror", (ev) => {
      const msg = (ev as GPUUncapturedErrorEvent).error?.message ?? String(ev);
      console.error(`flowgpu: WebGPU error: ${msg}`);
      this.#pendingError ??= msg;
    });
  }

  /**
   * Request an adapter and a device with the adapter's limits raised where kernels need them.
   * Rejects with a message naming what is missing.
   */
  static async create(opts: RuntimeOptions = {}): Promise<GpuRuntime> {
    const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
    if (!gpu) {
      throw new Error("navigator.gpu is undefined: this runtime does not expose WebGPU");
    }
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) throw new Error("navigator.gpu.requestAdapter() found no adapter");
    const L = adapter.limits;
    const device = await adapter.requestDevice({
      requiredLimits: {
        maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
        maxBufferSize: L.maxBufferSize,
        maxComputeWorkgroupsPerDimension: L.maxComputeWorkgroupsPerDimension,
        maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
        // A smaller alignment packs more dispatches' parameters into the uniform arena.
        minUniformBufferOffsetAlignment: L.minUniformBufferOffsetAlignment,
      },
    });
    return new GpuRuntime(adapter, device, opts);
  }

  /** Throw if the device was lost (every entry point calls this first). */
  checkAlive(): void {
    if (this.#lost !== null) {
      throw new Error(
        `The WebGPU device was lost (${this.#lost}); create a new backend to continue`,
      );
    }
  }

  /** Whether the device was lost. */
  get isLost(): boolean {
    return this.#lost !== null;
  }

  #markLost(why: string): void {
    if (this.#lost !== null) return;
    this.#lost = why;
    this.#encoder = null;
    this.#pass = null;
    const err = new Error(`The WebGPU device was lost (${why}) while work was pending`);
    for (const w of this.#waiters) w(err);
    this.#waiters.clear();
  }

  #destroyLater(b: GPUBuffer): void {
    if (this.#encoder) this.#toDestroy.push(b);
    else b.destroy();
  }

  /**
   * The kernel cached under `key`, compiling `code` (entry point `main`) on a miss; `code` may
   * be a function so that WGSL is only generated once per key.
   */
  kernel(key: string, code: string | (() => string)): Kernel {
    const have = this.#kernels.get(key);
    if (have) return have;
    this.checkAlive();
    if (typeof code === "function") code = code();
    const module = this.device.createShaderModule({ code: portableWgsl(code) });
    const pipeline = this.device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    const k: Kernel = { pipeline, layout: pipeline.getBindGroupLayout(0), key };
    this.#kernels.set(key, k);
    return k;
  }

  /** A storage buffer of at least `bytes` bytes from the pool. */
  acquire(bytes: number): GPUBuffer {
    this.checkAlive();
    if (bytes > this.maxBindingBytes) {
      throw new RangeError(
        `Expected a buffer of at most ${this.maxBindingBytes} bytes ` +
          `(maxStorageBufferBindingSize) but found ${bytes}`,
      );
    }
    const cap = this.#cap;
    if (cap) {
      // A capture reuses its own freed temporaries first: they become the trace's, pinned.
      const b = cap.free.get(sizeClass(bytes, this.maxBindingBytes))?.pop() ??
        this.#pool.acquire(bytes);
      cap.acquired.add(b);
      return b;
    }
    return this.#pool.acquire(bytes);
  }

  /** Return a buffer to the pool (safe while recorded work still uses it: see the file doc). */
  release(b: GPUBuffer): void {
    if (this.#lost !== null) return;
    const cap = this.#cap;
    if (cap) {
      if (cap.acquired.has(b)) {
        let list = cap.free.get(b.size);
        if (!list) cap.free.set(b.size, list = []);
        list.push(b);
      } else cap.quarantine.add(b);
      return;
    }
    // A buffer a trace reads or writes was freed: the trace could now write into a buffer the
    // pool hands to someone else, so it is dropped (its step runs eagerly again).
    for (const t of this.#traces) {
      if (t.watches(b)) this.#dropTrace(t, "a buffer it uses was freed");
    }
    this.#pool.release(b);
  }

  /**
   * A storage buffer initialised with `data`: a pooled one that no unsubmitted work can read,
   * written with `queue.writeBuffer` (ordered before the open encoder, which does not use it),
   * else a fresh one mapped at creation. Reusing idle buffers keeps a training loop that
   * uploads a batch per step from creating a buffer per step.
   */
  upload(data: Float32Array): GPUBuffer {
    this.checkAlive();
    if (data.byteLength > this.maxBindingBytes) {
      throw new RangeError(
        `Expected a buffer of at most ${this.maxBindingBytes} bytes ` +
          `(maxStorageBufferBindingSize) but found ${data.byteLength}`,
      );
    }
    this.#stats.uploads++;
    // While a step is captured its uploads stay fresh buffers the trace owns.
    const idle = !this.#cap && data.byteLength > 0 ? this.#pool.acquireIdle(data.byteLength) : null;
    if (idle) {
      this.device.queue.writeBuffer(idle, 0, data as Float32Array<ArrayBuffer>);
      return idle;
    }
    this.#stats.uploadsCreated++;
    const b = this.device.createBuffer({
      size: sizeClass(data.byteLength, this.maxBindingBytes),
      usage: STORAGE_USAGE,
      mappedAtCreation: true,
    });
    new Float32Array(b.getMappedRange(), 0, data.length).set(data);
    b.unmap();
    if (this.#cap) {
      this.#cap.acquired.add(b);
      this.#cap.ops.push({ kind: "upload", buf: b, data: data.slice() });
    }
    return b;
  }

  #ensurePass(): GPUComputePassEncoder {
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    if (!this.#pass) this.#pass = this.#encoder.beginComputePass();
    return this.#pass;
  }

  #endPass(): GPUCommandEncoder {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    return this.#encoder;
  }

  /**
   * Record one dispatch: `buffers` bind to bindings 0..n−1 (whole buffers, or the range of a
   * `GPUBufferBinding`), and `params`
   * (u32 words; floats via `f32Bits`) to binding n as a uniform of ⌈words/4⌉ vec4<u32>.
   * `dyn` names the words that hold per-step values (an RNG counter, a bias correction):
   * a replayed trace recomputes them (lib/capture.ts) instead of reusing the recorded ones.
   */
  dispatch(
    k: Kernel,
    buffers: readonly (GPUBuffer | GPUBufferBinding)[],
    params: readonly number[] | null,
    grid: readonly [number, number, number],
    dyn?: readonly DynWord[],
  ): void {
    this.checkAlive();
    if (this.#cap) {
      this.#cap.ops.push({
        kind: "dispatch",
        k,
        bufs: buffers.map((b) => (b instanceof GPUBuffer ? b : { ...b })),
        params: params ? Uint32Array.from(params, (w) => w >>> 0) : null,
        dyn: dyn?.length ? [...dyn] : null,
        grid: [grid[0], grid[1], grid[2]],
      });
    }
    const words = params ? Math.max(4, Math.ceil(params.length / 4) * 4) : 0;
    const bytes = words * 4;
    if (this.#batch >= this.maxBatchDispatches || this.#arenaUsed + bytes > ARENA_BYTES) {
      this.flush();
    }
    // A buffer binds whole; a `{ buffer, offset, size }` binding binds that range.
    const entries: GPUBindGroupEntry[] = buffers.map((b, i) => ({
      binding: i,
      resource: b instanceof GPUBuffer ? { buffer: b } : b,
    }));
    if (params) {
      const off = this.#arenaUsed;
      const base = off >>> 2;
      for (let i = 0; i < params.length; i++) this.#arenaU32[base + i] = params[i]!;
      entries.push({
        binding: buffers.length,
        resource: { buffer: this.#uniform, offset: off, size: bytes },
      });
      this.#arenaUsed = Math.ceil((off + bytes) / this.#align) * this.#align;
    }
    const bg = this.device.createBindGroup({ layout: k.layout, entries });
    const pass = this.#ensurePass();
    pass.setPipeline(k.pipeline);
    pass.setBindGroup(0, bg);
    pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    this.#batch++;
    this.#stats.dispatches++;
  }

  /** Record a buffer-to-buffer copy (ends the current compute pass). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.checkAlive();
    this.#cap?.ops.push({ kind: "copy", src, srcOffset, dst, dstOffset, bytes });
    this.#endPass().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Submit everything recorded so far (one submit), then reuse the arena. */
  flush(): void {
    this.checkAlive();
    if (!this.#encoder) return;
    const enc = this.#endPass();
    if (this.#arenaUsed > 0) {
      this.device.queue.writeBuffer(this.#uniform, 0, this.#arena, 0, this.#arenaUsed);
    }
    this.device.queue.submit([enc.finish()]);
    this.#stats.submits++;
    this.#encoder = null;
    this.#arenaUsed = 0;
    this.#batch = 0;
    // Destroying after the submit is safe: the GPU keeps them until that work completes.
    for (const b of this.#toDestroy) b.destroy();
    this.#toDestroy = [];
  }

  #guard<T>(p: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const w = (e: Error) => reject(e);
      this.#waiters.add(w);
      p.then(
        (v) => {
          this.#waiters.delete(w);
          resolve(v);
        },
        (e) => {
          this.#waiters.delete(w);
          reject(
            this.#lost !== null
              ? new Error(`The WebGPU device was lost (${this.#lost}) while work was pending`)
              : e,
          );
        },
      );
    });
  }

  #takeError(): void {
    if (this.#pendingError !== null) {
      const m = this.#pendingError;
      this.#pendingError = null;
      throw new Error(`A WebGPU validation error occurred in earlier work: ${m}`);
    }
  }

  /** Copy `bytes` bytes of `src` to the host (submits pending work). */
  async read(src: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    this.checkAlive();
    this.#takeError();
    this.#cap?.refuse("the step read a value back");
    if (bytes === 0) return new ArrayBuffer(0);
    const staging = this.device.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST });
    this.#endPass().copyBufferToBuffer(src, 0, staging, 0, bytes);
    this.flush();
    this.#stats.reads++;
    try {
      await this.#guard(staging.mapAsync(GPUMapMode.READ));
      this.#takeError();
      return staging.getMappedRange().slice(0);
    } finally {
      if (this.#lost === null) staging.destroy();
    }
  }

  /** Flush, then wait until the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.#guard(this.device.queue.onSubmittedWorkDone());
    this.checkAlive();
    this.#takeError();
  }

  /**
   * Start recording a step (see lib/device/trace.ts): everything recorded until `endCapture`
   * also runs now, as usual. `inputs` are buffers made before the step that it reads and that
   * a replay refills (e.g. a data batch).
   */
  beginCapture(inputs: readonly GPUBuffer[]): void {
    this.checkAlive();
    if (this.#cap) throw new Error("GpuRuntime.beginCapture: a capture is already running");
    this.#cap = new Capture(inputs);
    this.#cap.prevHooks = setCaptureHooks(this.#cap);
  }

  /** Whether a capture is running. */
  get capturing(): boolean {
    return this.#cap !== null;
  }

  /**
   * Stop recording. The step's freed temporaries stay out of the pool (they are the
   * returned step's until `buildTrace` pins them or `discardCapture` returns them).
   */
  endCapture(): CapturedStep {
    const cap = this.#cap;
    if (!cap) throw new Error("GpuRuntime.endCapture: no capture is running");
    this.#cap = null;
    setCaptureHooks(cap.prevHooks);
    const owned = new Set<GPUBuffer>();
    for (const list of cap.free.values()) for (const b of list) owned.add(b);
    const liveOut = new Set([...cap.acquired].filter((b) => !owned.has(b)));
    const inputs = new Set(cap.inputs);
    const external = new Set<GPUBuffer>();
    let refused = cap.refused;
    const see = (b: GPUBuffer) => {
      if (cap.acquired.has(b) || inputs.has(b)) return;
      if (cap.quarantine.has(b)) refused ??= "the step used a buffer that it freed";
      external.add(b);
    };
    for (const op of cap.ops) {
      if (op.kind === "dispatch") {
        for (const b of op.bufs) see(b instanceof GPUBuffer ? b : b.buffer);
      } else if (op.kind === "copy") {
        see(op.src);
        see(op.dst);
      }
    }
    const released = new Set(cap.quarantine);
    // Freed buffers made before the step go back to the pool now that nothing records.
    for (const b of cap.quarantine) this.release(b);
    return {
      ops: cap.ops,
      inputs: [...cap.inputs],
      owned,
      liveOut,
      external,
      released,
      refused,
      discarded: false,
    };
  }

  /**
   * Return a capture's pinned temporaries to the pool: it will not be replayed, but it can
   * still be compared with the next capture (`compareSteps` needs only which buffer played
   * which role).
   */
  discardCapture(c: CapturedStep): void {
    if (c.discarded) return;
    c.discarded = true;
    for (const b of c.owned) this.#pool.release(b);
  }

  /**
   * Turn a captured step into a replayable trace: its temporaries stay pinned (outside the
   * pool), each input gets a private buffer, and bind groups and parameter words are built
   * once. Dropped when a buffer it uses is freed, or by `dispose()`.
   */
  buildTrace(c: CapturedStep): StepTrace {
    this.checkAlive();
    if (c.discarded) throw new Error("Cannot build a trace from a discarded capture");
    c.discarded = true;
    const priv = new Map<GPUBuffer, GPUBuffer>();
    for (const b of c.inputs) priv.set(b, this.#pool.acquire(b.size));
    const parts: TraceParts = {
      device: this.device,
      align: this.#align,
      capture: c,
      inputCopies: priv,
      staging: (data) => {
        const b = this.device.createBuffer({
          size: sizeClass(data.byteLength),
          usage: STORAGE_USAGE,
          mappedAtCreation: true,
        });
        new Float32Array(b.getMappedRange(), 0, data.length).set(data);
        b.unmap();
        return b;
      },
      release: (bufs, destroy) => {
        for (const b of bufs) this.#pool.release(b);
        for (const b of destroy) this.#destroyLater(b);
      },
      onDispose: (t) => this.#traces.delete(t),
    };
    const t = new StepTrace(parts);
    this.#traces.add(t);
    return t;
  }

  #dropTrace(t: StepTrace, why: string): void {
    t.invalidate(why);
  }

  /**
   * @internal Replay `t` for `env`: redo its host effects, recompute its dynamic words, copy
   * `inputs` (the step's new batch, in capture order) into its input buffers, and record its
   * commands into the current batch (submitted like any other work).
   */
  replayTrace(t: StepTrace, env: TraceEnv, inputs: readonly GPUBuffer[]): void {
    this.checkAlive();
    if (this.#cap) throw new Error("Cannot replay a trace while a capture is running");
    if (inputs.length !== t.inputTargets.length) {
      throw new RangeError(
        `Expected ${t.inputTargets.length} trace inputs but found ${inputs.length}`,
      );
    }
    const words = t.prepare(env);
    if (this.#batch + t.dispatches > this.maxBatchDispatches) this.flush();
    // Each replay writes its words into the next buffer of the trace's ring; one whose last
    // use is still in the unsubmitted encoder is submitted first, because `writeBuffer` runs
    // on the queue timeline before that encoder's commands.
    const slot = t.nextSlot();
    if (this.#encoder && t.slotSubmit[slot] === this.#stats.submits) this.flush();
    this.device.queue.writeBuffer(
      t.uniforms[slot]!,
      0,
      words.buffer as ArrayBuffer,
      0,
      words.byteLength,
    );
    t.slotSubmit[slot] = this.#stats.submits;
    t.inputTargets.forEach((dst, i) => {
      const src = inputs[i]!;
      this.#endPass().copyBufferToBuffer(src, 0, dst, 0, Math.min(src.size, dst.size));
    });
    for (const op of t.encoded) {
      if (op.kind === "dispatch") {
        const pass = this.#ensurePass();
        pass.setPipeline(op.k.pipeline);
        pass.setBindGroup(0, op.bgs[slot]!);
        pass.dispatchWorkgroups(op.grid[0], op.grid[1], op.grid[2]);
      } else {
        this.#endPass().copyBufferToBuffer(op.src, op.srcOffset, op.dst, op.dstOffset, op.bytes);
      }
    }
    this.#batch += t.dispatches;
    this.#stats.dispatches += t.dispatches;
  }

  /** Counters (see `RuntimeStats`). */
  stats(): RuntimeStats {
    const p = this.#pool.stats();
    return {
      ...this.#stats,
      pendingDispatches: this.#batch,
      pipelines: this.#kernels.size,
      pooledBytes: p.pooledBytes,
      buffersCreated: p.created,
      buffersReused: p.reused,
    };
  }

  /** Release every pooled buffer. */
  trimPool(): void {
    if (this.#lost === null) this.#pool.clear();
  }

  /** Destroy the device (tests use this to simulate a lost device); later calls throw. */
  destroy(): void {
    this.#markLost("destroyed: GpuRuntime.destroy() was called");
    this.device.destroy();
  }
}

/** The state of a running capture (see `GpuRuntime.beginCapture`). */
class Capture implements CaptureHooks {
  ops: CapOp[] = [];
  acquired = new Set<GPUBuffer>();
  free = new Map<number, GPUBuffer[]>();
  quarantine = new Set<GPUBuffer>();
  refused: string | null = null;
  prevHooks: CaptureHooks | null = null;
  constructor(readonly inputs: readonly GPUBuffer[]) {}
  host(fn: (env: TraceEnv) => void): void {
    this.ops.push({ kind: "host", fn });
  }
  refuse(why: string): void {
    this.refused ??= why;
  }
}
