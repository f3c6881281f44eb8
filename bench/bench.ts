/**
 * @file `deno task bench`: kernel and training benchmarks against peers measured in the same run
 * on the same adapter. Prints one JSON object per line per case; `--smoke` runs tiny sizes so CI
 * can check the output quickly (its numbers mean nothing).
 *
 * Each case is an async function of the shared {@linkcode BenchContext} returning its records;
 * peers live in `bench/peers/`. Add a case by appending to {@linkcode CASES}.
 * @module
 */
import { parseArgs } from "node:util";
import { type Gpu, MatmulJob, medianMs, openGpu } from "./harness.ts";
import { loadTfjs, type MatmulRunner, type TfjsPeer } from "./peers/tfjs.ts";
import { torchInfo, torchMatmulMs } from "./peers/torch.ts";
import { BENCH_REPS, onWasm, spreadFields } from "./cases/common.ts";
import { compareRuns, parseJsonl } from "./compare.ts";
import { toyCfmCase } from "./cases/toy_cfm.ts";
import { sinkhornCase } from "./cases/sinkhorn.ts";
import { sampleCase } from "./cases/sample.ts";
import { ditCase } from "./cases/dit.ts";
import { getBackend, init } from "../mod.ts";

/** State shared by the cases of one run. */
interface BenchContext {
  gpu: Gpu;
  smoke: boolean;
  /** GFLOP/s of the FMA loop, once the `fma-peak` case has run. */
  fmaPeak?: number;
  /** tfjs on the same adapter, loaded on first use (`null` if it failed to load). */
  tfjs(): Promise<TfjsPeer | null>;
}

/** One line of output. */
type BenchRecord = Record<string, unknown>;

/** A named benchmark case. */
interface BenchCase {
  name: string;
  run(ctx: BenchContext): Promise<BenchRecord[]>;
}

const round = (x: number | null | undefined, d = 3) =>
  x === null || x === undefined || !Number.isFinite(x) ? null : Number(x.toPrecision(d + 2));
const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y), h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
};
const ratio = (a: number | null, b: number | null) =>
  a === null || b === null || b === 0 ? null : round(a / b);

// --------------------------------------------------------------------------------------------
// fma-peak

function fmaShader(chains: number, unroll: number, iters: number, wg: number): string {
  const cs = [...Array(chains).keys()];
  const step = cs.map((c) => `v${c} = fma(v${c}, s, t);`).join(" ");
  return `@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  // s and t derive from the invocation id so the compiler cannot fold the chains.
  let s = vec4<f32>(0.9999 - f32(gid.x & 7u) * 1e-7);
  let t = vec4<f32>(1e-4);
${cs.map((c) => `  var v${c} = vec4<f32>(f32(gid.x) * 1e-9 + ${c}.0);`).join("\n")}
  for (var i = 0u; i < ${iters}u; i++) {
${Array(unroll).fill(`    ${step}`).join("\n")}
  }
  out[gid.x] = ${cs.map((c) => `v${c}`).join(" + ")};
}`;
}

/** GFLOP/s of independent vec4 FMA chains; the best of a few chain counts. */
async function fmaPeak(ctx: BenchContext): Promise<BenchRecord[]> {
  const { device } = ctx.gpu;
  const wg = 64, groups = ctx.smoke ? 8 : 256, iters = ctx.smoke ? 16 : 1024, unroll = 4;
  let best = { gflops: 0, chains: 0 };
  for (const chains of ctx.smoke ? [8] : [16, 32, 48]) {
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: {
        module: device.createShaderModule({ code: fmaShader(chains, unroll, iters, wg) }),
        entryPoint: "main",
      },
    });
    const buf = device.createBuffer({ size: wg * groups * 16, usage: GPUBufferUsage.STORAGE });
    const bind = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: buf } }],
    });
    const ms = await medianMs(
      async () => {
        const enc = device.createCommandEncoder();
        const pass = enc.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bind);
        pass.dispatchWorkgroups(groups);
        pass.end();
        device.queue.submit([enc.finish()]);
        await device.queue.onSubmittedWorkDone();
      },
      1,
      ctx.smoke ? 1 : 5,
    );
    buf.destroy();
    const gflops = (2 * 4 * chains * unroll * iters * wg * groups) / ms / 1e6;
    if (gflops > best.gflops) best = { gflops, chains };
  }
  ctx.fmaPeak = best.gflops;
  return [{
    case: "fma-peak",
    adapter: ctx.gpu.info.description,
    unit: "GFLOP/s",
    ours: round(best.gflops),
    config: { vec4_chains: best.chains, unroll, iters, invocations: wg * groups },
  }];
}

// --------------------------------------------------------------------------------------------
// matmul

function rand(n: number, seed: number): Float32Array {
  // A small LCG: the values only need to be finite and not all equal.
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2147483648 - 1;
  }
  return out;
}

/** Min and max GFLOP/s of timed samples (ms each), or null without samples. */
function gflopsSpread(flops: number, ms: number[]): { min: number; max: number } | null {
  return ms.length
    ? { min: flops / Math.max(...ms) / 1e6, max: flops / Math.min(...ms) / 1e6 }
    : null;
}

function loadAvg(): (number | null)[] | null {
  try {
    return Deno.loadavg().map((x) => round(x));
  } catch {
    return null; // --allow-sys=loadavg not granted (e.g. the smoke test)
  }
}

/**
 * The run's environment, printed first: adapter, CPU, load, and what the peers ran with (the
 * PyTorch build's BLAS settings and the BLAS library actually mapped into its process).
 */
async function envRecord(gpu: Gpu): Promise<BenchRecord> {
  let torch: unknown = null;
  try {
    torch = await torchInfo();
  } catch (e) {
    torch = { error: e instanceof Error ? e.message : String(e) };
  }
  return {
    case: "env",
    adapter: gpu.info.description,
    // Deno reads /proc only with --allow-all; the PyTorch peer's process reports the CPU model.
    cpu: (torch as { cpu?: string } | null)?.cpu ?? null,
    cpus: navigator.hardwareConcurrency,
    load_avg: loadAvg(),
    deno: Deno.version.deno,
    torch,
    reps: BENCH_REPS,
  };
}

/** f32 n×n×n matmul: ours (raw harness), tfjs-webgpu on the same adapter, PyTorch CPU. */
async function matmul(ctx: BenchContext): Promise<BenchRecord[]> {
  const records: BenchRecord[] = [];
  const sizes = ctx.smoke ? [32] : [256, 1024, 2048];
  const tfjs = await ctx.tfjs();
  for (const n of sizes) {
    const warmup = 1, reps = ctx.smoke ? 1 : n >= 1024 ? BENCH_REPS : 9;
    // Waiting for the queue costs ~11 ms on Deno's wgpu here, whatever the work; several
    // products per sample keep that from swamping small sizes (for both us and tfjs).
    const products = Math.max(1, Math.min(16, Math.round(2 ** 27 / n ** 3)));
    const flops = 2 * n ** 3;
    const g = {
      batch: 1,
      m: n,
      n,
      k: n,
      transA: false,
      transB: false,
      aBatchStride: 0,
      bBatchStride: 0,
    };
    const ha = rand(n * n, 1), hb = rand(n * n, 2);
    const job = new MatmulJob(ctx.gpu, ha, hb, g);
    let tfRun: MatmulRunner | null = null, tfError: string | undefined;
    const ts: number[] = [], tfTs: number[] = [];
    try {
      if (tfjs) {
        try {
          tfRun = await tfjs.prepareMatmul(n);
          for (let i = 0; i < warmup; i++) await tfRun.run(products);
        } catch (e) {
          tfError = e instanceof Error ? e.message : String(e);
          tfRun?.dispose();
          tfRun = null;
        }
      }
      for (let i = 0; i < warmup; i++) await job.dispatch(products);
      // Samples alternate between us and tfjs, so load from other processes hits both alike.
      for (let i = 0; i < reps; i++) {
        let t0 = performance.now();
        await job.dispatch(products);
        ts.push(performance.now() - t0);
        if (tfRun) {
          t0 = performance.now();
          await tfRun.run(products);
          tfTs.push(performance.now() - t0);
        }
      }
      // A figure for a wrong product is worthless: check one element against the host.
      const got = (await job.read())[n * n - 1]!;
      let want = 0;
      for (let p = 0; p < n; p++) want += ha[(n - 1) * n + p]! * hb[p * n + n - 1]!;
      if (!(Math.abs(got - want) <= 1e-3 * Math.sqrt(n) + 1e-4 * Math.abs(want))) {
        throw new Error(`our matmul gave C[${n - 1}, ${n - 1}] = ${got}, expected ${want}`);
      }
    } finally {
      job.destroy();
      tfRun?.dispose();
    }
    const ours = (flops * products) / median(ts) / 1e6;
    const tf = tfTs.length ? (flops * products) / median(tfTs) / 1e6 : null;
    const torch = await torchMatmulMs(n, warmup, reps).catch(() => null);
    const th = torch ? flops / torch.ms / 1e6 : null;
    // The wasm backend's matmul (WebAssembly SIMD, all cores) on the same host arrays.
    const wasm = await onWasm(() => {
      const be = getBackend();
      const a = be.upload(ha), b = be.upload(hb);
      const wts: number[] = [];
      try {
        for (let i = 0; i < warmup + reps; i++) {
          const t0 = performance.now();
          be.free(be.matmul(a, b, g));
          if (i >= warmup) wts.push(performance.now() - t0);
        }
        const c = be.matmul(a, b, g);
        const got = be.readSync(c)[n * n - 1]!;
        be.free(c);
        let want = 0;
        for (let p = 0; p < n; p++) want += ha[(n - 1) * n + p]! * hb[p * n + n - 1]!;
        if (!(Math.abs(got - want) <= 1e-3 * Math.sqrt(n) + 1e-4 * Math.abs(want))) {
          throw new Error(`the wasm matmul gave C[${n - 1}, ${n - 1}] = ${got}, expected ${want}`);
        }
      } finally {
        be.free(a);
        be.free(b);
      }
      return Promise.resolve(wts);
    });
    const wts = "value" in wasm ? wasm.value : [];
    const wg = wts.length ? flops / median(wts) / 1e6 : null;
    records.push({
      case: "matmul",
      dtype: "f32",
      n,
      adapter: ctx.gpu.info.description,
      unit: "GFLOP/s",
      ours: round(ours),
      [tfjs?.backend === "cpu" ? "tfjs_cpu" : "tfjs_webgpu"]: round(tf),
      torch_cpu: round(th),
      // GFLOP/s: the slowest sample gives the min.
      ...spreadFields("ours", gflopsSpread(flops * products, ts)),
      ...spreadFields(
        tfjs?.backend === "cpu" ? "tfjs_cpu" : "tfjs_webgpu",
        gflopsSpread(flops * products, tfTs),
      ),
      ...spreadFields(
        "torch_cpu",
        torch ? gflopsSpread(flops, [torch.ms_min, torch.ms_max]) : null,
      ),
      ratio_vs_tfjs: ratio(ours, tf),
      ratio_vs_torch_cpu: ratio(ours, th),
      fraction_of_fma_peak: ratio(ours, ctx.fmaPeak ?? null),
      ours_wasm: round(wg),
      ...spreadFields("ours_wasm", gflopsSpread(flops, wts)),
      ratio_wasm_vs_torch_cpu: ratio(wg, th),
      ratio_wasm_vs_tfjs: ratio(wg, tf),
      ...("value" in wasm ? { wasm_device: wasm.device } : { wasm_skipped: wasm.skipped }),
      kernel: job.kernel.key,
      reps,
      products_per_sample: products,
      ...(torch ? { torch_threads: torch.threads } : {}),
      ...(tfError ? { tfjs_error: tfError } : {}),
    });
  }
  return records;
}

/**
 * Cases in run order; `fma-peak` first, since other cases report a fraction of it.
 *
 * @example
 * ```ts
 * import { CASES } from "./bench.ts";
 * if (CASES[0]?.name !== "fma-peak") throw new Error("fma-peak must run first");
 * ```
 */
export const CASES: BenchCase[] = [
  { name: "fma-peak", run: fmaPeak },
  { name: "matmul", run: matmul },
  { name: "toy-cfm", run: toyCfmCase },
  { name: "sinkhorn", run: sinkhornCase },
  { name: "sample", run: sampleCase },
  { name: "dit", run: ditCase },
];

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      smoke: { type: "boolean", default: false },
      case: { type: "string", multiple: true },
      compare: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      `Usage: deno task bench [--smoke] [--case NAME]… [--compare OLD.jsonl]\n` +
        `Benchmarks as JSON lines, every peer measured in the same run.\n` +
        `  --smoke       a quick run of every case (correctness, not speed)\n` +
        `  --case NAME   only these cases: ${CASES.map((k) => k.name).join(", ")}\n` +
        `  --compare F   after the run, print each figure's change against an earlier run's\n` +
        `                JSON lines (stderr; stdout stays JSON)`,
    );
    return;
  }
  // The library's cases run on the default backend (WebGPU when an adapter exists).
  await init();
  const only = values.case;
  if (only) {
    for (const c of only) {
      if (!CASES.some((k) => k.name === c)) {
        throw new RangeError(
          `Unknown bench case "${c}": expected one of ${CASES.map((k) => k.name).join(", ")}`,
        );
      }
    }
  }
  const selected = CASES.filter((c) => !only || only.includes(c.name));
  // Read the baseline first: a wrong path should fail before minutes of benchmarking.
  const baseline = values.compare === undefined ? null : parseJsonl(
    await Deno.readTextFile(values.compare).catch((e) => {
      throw new TypeError(`Cannot read --compare ${values.compare}: ${e.message}`);
    }),
    values.compare,
  );
  const records: BenchRecord[] = [];
  const gpu = await openGpu();
  if (!gpu) {
    for (const c of selected) {
      console.log(JSON.stringify({ case: c.name, adapter: null, skipped: "no WebGPU adapter" }));
    }
    return;
  }
  let tf: Promise<TfjsPeer | null> | undefined;
  const ctx: BenchContext = {
    gpu,
    smoke: values.smoke ?? false,
    tfjs: () => (tf ??= loadTfjs().catch(() => null)),
  };
  const env = await envRecord(gpu);
  console.log(JSON.stringify(env));
  for (const c of selected) {
    try {
      for (const r of await c.run(ctx)) {
        records.push(r);
        console.log(JSON.stringify(r));
      }
    } catch (e) {
      console.log(JSON.stringify({
        case: c.name,
        adapter: gpu.info.description,
        error: e instanceof Error ? e.message : String(e),
      }));
      Deno.exitCode = 1;
    }
  }
  gpu.device.destroy();
  if (baseline) {
    for (const line of compareRuns(baseline, records)) console.error(line);
  }
}

if (import.meta.main) await main();
