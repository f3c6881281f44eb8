/**
 * @file A minimal raw-WebGPU harness for kernel benchmarks and tests: open the adapter, run a
 * matmul kernel from `kernels/matmul.ts` on host arrays, and time dispatches. It bypasses the
 * library's backend on purpose, so kernels can be measured and checked on their own.
 * @module
 */
import type { MatmulGeom } from "../lib/ir.ts";
import { buildMatmul, type MatmulBuildOptions, type MatmulKernel } from "../kernels/matmul.ts";

/** An open device plus the adapter facts that kernel builders take. */
export interface Gpu {
  adapter: GPUAdapter;
  device: GPUDevice;
  info: { isFallback: boolean; description: string };
}

/**
 * Request an adapter and device, or return `null` when WebGPU is unavailable.
 *
 * @example
 * ```ts
 * import { openGpu } from "./harness.ts";
 * const gpu = await openGpu();
 * gpu?.device.destroy();
 * ```
 */
export async function openGpu(): Promise<Gpu | null> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) return null;
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) return null;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
    },
  });
  const ai = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const description = ai.description || [ai.vendor, ai.architecture, ai.device].join(" ").trim();
  return { adapter, device, info: { isFallback: ai.isFallbackAdapter === true, description } };
}

function storage(device: GPUDevice, data: Float32Array): GPUBuffer {
  const bytes = data.byteLength;
  // Zero-sized bindings are invalid; 16 bytes also covers a vec4 view of a tiny array.
  const buf = device.createBuffer({
    size: Math.max(16, Math.ceil(bytes / 16) * 16),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
  if (data.length > 0) device.queue.writeBuffer(buf, 0, data as Float32Array<ArrayBuffer>);
  return buf;
}

/**
 * A prepared matmul: buffers filled, pipeline built, ready to dispatch repeatedly. The output
 * starts as NaN so elements a kernel fails to write show up.
 *
 * @example
 * ```ts
 * import { MatmulJob, openGpu } from "./harness.ts";
 * const gpu = await openGpu();
 * if (gpu) {
 *   const g = { batch: 1, m: 2, n: 2, k: 1, transA: false, transB: false, aBatchStride: 0, bBatchStride: 0 };
 *   const job = new MatmulJob(gpu, new Float32Array([1, 2]), new Float32Array([3, 4]), g);
 *   await job.dispatch(3);
 *   const out = await job.read();
 *   job.destroy();
 *   if (out.join() !== "3,4,6,8") throw new Error(`got ${out}`);
 *   gpu.device.destroy();
 * }
 * ```
 */
export class MatmulJob {
  readonly kernel: MatmulKernel;
  readonly #gpu: Gpu;
  readonly #pipeline: GPUComputePipeline;
  readonly #bind: GPUBindGroup;
  readonly #bufs: GPUBuffer[];
  readonly #outSize: number;

  constructor(
    gpu: Gpu,
    a: Float32Array,
    b: Float32Array,
    g: MatmulGeom,
    opts: MatmulBuildOptions = {},
    cache?: Map<string, GPUComputePipeline>,
  ) {
    const { device } = gpu;
    this.#gpu = gpu;
    this.kernel = buildMatmul(g, gpu.info, opts);
    let pipeline = cache?.get(this.kernel.key);
    if (!pipeline) {
      const module = device.createShaderModule({ code: this.kernel.code });
      pipeline = device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
      cache?.set(this.kernel.key, pipeline);
    }
    this.#pipeline = pipeline;
    this.#outSize = g.batch * g.m * g.n;
    const params = device.createBuffer({
      size: 32,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(
      params,
      0,
      new Uint32Array([
        g.batch,
        g.m,
        g.n,
        g.k,
        g.transA ? 1 : 0,
        g.transB ? 1 : 0,
        g.aBatchStride,
        g.bBatchStride,
      ]),
    );
    // The output starts as NaN, so an element the kernel never writes cannot pass a check.
    const out = storage(device, new Float32Array(this.#outSize).fill(NaN));
    this.#bufs = [storage(device, a), storage(device, b), out, params];
    this.#bind = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: this.#bufs.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
  }

  /** Encode `times` dispatches into one pass and submit; resolves when the queue drains. */
  async dispatch(times = 1): Promise<void> {
    const { device } = this.#gpu;
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(this.#pipeline);
    pass.setBindGroup(0, this.#bind);
    for (let i = 0; i < times; i++) pass.dispatchWorkgroups(...this.kernel.workgroups);
    pass.end();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
  }

  /** Copy the output back to the host. */
  async read(): Promise<Float32Array> {
    const { device } = this.#gpu;
    const bytes = Math.max(16, Math.ceil((this.#outSize * 4) / 16) * 16);
    const staging = device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(this.#bufs[2]!, 0, staging, 0, bytes);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Float32Array(staging.getMappedRange().slice(0, this.#outSize * 4));
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** Free the job's buffers (the pipeline stays cached). */
  destroy(): void {
    for (const b of this.#bufs) b.destroy();
  }
}

/**
 * Run one matmul on the raw harness and return the `[batch, m, n]` output.
 *
 * @example
 * ```ts
 * import { openGpu, runMatmul } from "./harness.ts";
 * const gpu = await openGpu();
 * if (gpu) {
 *   const g = { batch: 1, m: 1, n: 1, k: 2, transA: false, transB: false, aBatchStride: 0, bBatchStride: 0 };
 *   const out = await runMatmul(gpu, new Float32Array([1, 2]), new Float32Array([3, 4]), g);
 *   if (out[0] !== 11) throw new Error(`got ${out[0]}`);
 *   gpu.device.destroy();
 * }
 * ```
 */
export async function runMatmul(
  gpu: Gpu,
  a: Float32Array,
  b: Float32Array,
  g: MatmulGeom,
  opts: MatmulBuildOptions = {},
  cache?: Map<string, GPUComputePipeline>,
): Promise<Float32Array> {
  const job = new MatmulJob(gpu, a, b, g, opts, cache);
  try {
    await job.dispatch();
    return await job.read();
  } finally {
    job.destroy();
  }
}

/**
 * Median wall time in milliseconds of `reps` calls of `fn` after `warmup` untimed calls.
 *
 * @example
 * ```ts
 * import { medianMs } from "./harness.ts";
 * const ms = await medianMs(() => Promise.resolve(), 1, 3);
 * if (!(ms >= 0)) throw new Error("bad");
 * ```
 */
export async function medianMs(
  fn: () => Promise<void>,
  warmup: number,
  reps: number,
): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  ts.sort((x, y) => x - y);
  const h = ts.length >> 1;
  return ts.length % 2 ? ts[h]! : (ts[h - 1]! + ts[h]!) / 2;
}
