/**
 * @file Bench case `toy-cfm`: training steps/s of conditional flow matching on 8 Gaussians
 * with the MLP [x(2), t] → 256 → 256 → 256 → 2 (SiLU) and Adam(1e-3), at batch 256 and 1024:
 * ours (WebGPU, and the `wasm` backend on the same cores) vs tfjs-webgpu on the same adapter vs
 * PyTorch CPU (2 threads).
 * @module
 */
import {
  cfmLoss,
  eightGaussians,
  Generator,
  getBackend,
  nn,
  optim,
  type Tensor,
  valueAndGrad,
} from "../../mod.ts";
import { tfjsCfm } from "../peers/tfjs_cfm.ts";
import type { WebGPUBackend } from "../../lib/backend/webgpu.ts";
import { torchCfm } from "../peers/torch_flow.ts";
import {
  BENCH_REPS,
  type BenchRecord,
  type CaseContext,
  onWasm,
  ourBackend,
  ratio,
  round,
  type Spread,
  spread,
  spreadFields,
  why,
} from "./common.ts";

/** Device memory over the timed steps (WebGPU backend only), in bytes. */
export interface StepMemory {
  /** High-water mark of bytes held by live tensors. */
  peak_live_bytes: number;
  /** Bytes the buffer pool holds for reuse after the steps. */
  pooled_bytes: number;
  /** A lower bound for any implementation of the step (see the computation). */
  min_bytes: number;
  /** Buffers the pool had to create during the timed steps (0: nothing new after warm-up). */
  buffers_created_after_warmup: number;
  /** Upload buffers created during the timed steps. */
  upload_buffers_created_after_warmup: number;
}

/** Sizes of one run of the case. */
export interface ToyCfmConfig {
  batches: number[];
  hidden: number;
  depth: number;
  warmup: number;
  /** Steps per timed repetition. */
  steps: number;
  reps: number;
}

/**
 * Our steps/s for one batch size, plus the mean loss of the first and last few steps. The
 * timed loop records steps only; the one `sync()` per repetition waits for the queue (about
 * 11 ms on Deno's wgpu whatever the work, amortised over `steps`). Losses are read after timing.
 *
 * @example
 * ```ts
 * import { oursCfm } from "./toy_cfm.ts";
 * const r = await oursCfm(8, { batches: [8], hidden: 8, depth: 1, warmup: 1, steps: 2, reps: 1 });
 * if (!(r.stepsPerSec > 0) || !Number.isFinite(r.lossLast)) throw new Error("bad");
 * ```
 */
export async function oursCfm(
  batch: number,
  cfg: ToyCfmConfig,
): Promise<
  {
    stepsPerSec: number;
    rate: Spread;
    lossFirst: number;
    lossLast: number;
    memory: StepMemory | null;
  }
> {
  const be = getBackend();
  const net = new nn.VelocityMLP({ dim: 2, hidden: cfg.hidden, depth: cfg.depth, seed: 0 });
  const params = net.parameters();
  const opt = new optim.Adam({ lr: 1e-3 });
  const gen = new Generator(1);
  const lossFn = valueAndGrad((_p: Tensor[], x1: Tensor) =>
    cfmLoss((x, t) => net.forward(x, t), x1, { generator: gen }).loss
  );
  const losses: Tensor[] = [];
  const step = () => {
    const x1 = eightGaussians(batch, { generator: gen });
    try {
      const [loss, grads] = lossFn(params, x1);
      opt.step(params, grads);
      for (const g of grads) g.dispose();
      losses.push(loss);
    } finally {
      x1.dispose();
    }
  };
  try {
    for (let i = 0; i < cfg.warmup; i++) step();
    await be.sync();
    const gpu = "peakLiveBytes" in be ? be as unknown as WebGPUBackend : null;
    gpu?.resetPeakLiveBytes();
    const s0 = gpu?.stats();
    const rates: number[] = [];
    for (let r = 0; r < cfg.reps; r++) {
      const t0 = performance.now();
      for (let i = 0; i < cfg.steps; i++) step();
      await be.sync();
      rates.push(cfg.steps / ((performance.now() - t0) / 1000));
    }
    const s1 = gpu?.stats();
    const ps = params.reduce((a, p) => a + p.size, 0);
    const memory = gpu && s0 && s1
      ? {
        peak_live_bytes: gpu.peakLiveBytes(),
        pooled_bytes: s1.pooledBytes,
        // Parameters, gradients and Adam's two moments, plus what backward must keep: each
        // linear layer's input and each hidden pre-activation (SiLU's derivative needs it).
        min_bytes: 4 * (4 * ps + batch * (3 + 2 * cfg.hidden * cfg.depth + 2)),
        buffers_created_after_warmup: s1.buffersCreated - s0.buffersCreated,
        upload_buffers_created_after_warmup: s1.uploadsCreated - s0.uploadsCreated,
      }
      : null;
    const ls: number[] = [];
    for (const l of losses) ls.push(await l.item());
    const k = Math.max(1, Math.min(3, ls.length >> 1));
    const avg = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    return {
      stepsPerSec: spread(rates).median,
      rate: spread(rates),
      memory,
      lossFirst: avg(ls.slice(0, k)),
      lossLast: avg(ls.slice(-k)),
    };
  } finally {
    for (const l of losses) l.dispose();
    net.dispose();
    opt.dispose();
  }
}

/**
 * The `toy-cfm` case: one record per batch size.
 *
 * @example
 * ```ts
 * import { toyCfmCase } from "./toy_cfm.ts";
 * if (typeof toyCfmCase !== "function") throw new Error("bad");
 * ```
 */
export async function toyCfmCase(ctx: CaseContext): Promise<BenchRecord[]> {
  const cfg: ToyCfmConfig = ctx.smoke
    ? { batches: [16], hidden: 16, depth: 3, warmup: 2, steps: 3, reps: 1 }
    : { batches: [256, 1024], hidden: 256, depth: 3, warmup: 5, steps: 15, reps: BENCH_REPS };
  let torch: Awaited<ReturnType<typeof torchCfm>> = null, torchSkip: string | undefined;
  try {
    torch = await torchCfm(cfg);
    if (!torch) torchSkip = "PyTorch is not installed (or python3 is not allowed to run)";
  } catch (e) {
    torchSkip = why(e);
  }
  const tfjs = await ctx.tfjs();
  const records: BenchRecord[] = [];
  for (const batch of cfg.batches) {
    const ours = await oursCfm(batch, cfg);
    if (!Number.isFinite(ours.lossLast) || !Number.isFinite(ours.lossFirst)) {
      throw new Error(`our toy-cfm loss is not finite: ${ours.lossFirst} → ${ours.lossLast}`);
    }
    if (!ctx.smoke && !(ours.lossLast < ours.lossFirst)) {
      throw new Error(`our toy-cfm loss did not fall: ${ours.lossFirst} → ${ours.lossLast}`);
    }
    let tf: Awaited<ReturnType<typeof tfjsCfm>> | null = null, tfSkip: string | undefined;
    if (!tfjs) tfSkip = "tfjs failed to load";
    else if (tfjs.backend !== "webgpu") tfSkip = "tfjs could not open WebGPU (CPU fallback)";
    else {
      try {
        tf = await tfjsCfm({ batch, ...cfg });
      } catch (e) {
        tfSkip = why(e);
      }
    }
    const th = torch?.batches[String(batch)] ?? null;
    // The same step on the wasm backend (WebAssembly SIMD on the CPU's cores).
    const wasm = await onWasm(() => oursCfm(batch, cfg));
    const w = "value" in wasm ? wasm.value : null;
    records.push({
      case: "toy-cfm",
      batch,
      adapter: ctx.gpu.info.description,
      ...ourBackend(),
      unit: "steps/s",
      ours: round(ours.stepsPerSec),
      tfjs_webgpu: round(tf?.stepsPerSec),
      torch_cpu: round(th?.steps_per_s),
      ...spreadFields("ours", ours.rate),
      ...spreadFields(
        "tfjs_webgpu",
        tf ? { min: tf.stepsPerSecMin, max: tf.stepsPerSecMax } : null,
      ),
      ...spreadFields(
        "torch_cpu",
        th ? { min: th.steps_per_s_min, max: th.steps_per_s_max } : null,
      ),
      ratio_vs_tfjs: ratio(round(ours.stepsPerSec), round(tf?.stepsPerSec)),
      ratio_vs_torch_cpu: ratio(round(ours.stepsPerSec), round(th?.steps_per_s)),
      ours_wasm: round(w?.stepsPerSec),
      ...spreadFields("ours_wasm", w?.rate ?? null),
      ratio_wasm_vs_torch_cpu: ratio(round(w?.stepsPerSec), round(th?.steps_per_s)),
      ratio_wasm_vs_webgpu: ratio(round(w?.stepsPerSec), round(ours.stepsPerSec)),
      ...("value" in wasm ? { wasm_device: wasm.device } : { wasm_skipped: wasm.skipped }),
      ...(w ? { wasm_loss: [round(w.lossFirst), round(w.lossLast)] } : {}),
      loss: [round(ours.lossFirst), round(ours.lossLast)],
      ...(tf ? { tfjs_loss: [round(tf.lossFirst), round(tf.lossLast)] } : {}),
      ...(th ? { torch_loss: [round(th.loss_first), round(th.loss_last)] } : {}),
      config: { hidden: cfg.hidden, depth: cfg.depth, steps: cfg.steps, reps: cfg.reps },
      ...(ours.memory ? { memory: ours.memory } : {}),
      ...(torch ? { torch_threads: torch.threads } : {}),
      ...(tfSkip ? { tfjs_skipped: tfSkip } : {}),
      ...(torchSkip ? { torch_skipped: torchSkip } : {}),
    });
  }
  return records;
}
