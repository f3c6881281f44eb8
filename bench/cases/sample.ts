/**
 * @file Bench case `sample`: samples/s of Euler sampling (100 steps, 10,000 points) through the
 * toy-cfm network ([x, t] → 256 → 256 → 256 → 2, SiLU, random weights); ours (`integrate`)
 * vs PyTorch CPU under `torch.no_grad()`.
 * @module
 */
import { getBackend, integrate, nn, randn } from "../../mod.ts";
import { torchSample } from "../peers/torch_flow.ts";
import {
  BENCH_REPS,
  type BenchRecord,
  type CaseContext,
  median,
  onWasm,
  ourBackend,
  ratio,
  round,
  spreadFields,
  why,
} from "./common.ts";

/**
 * Milliseconds to draw `n` samples with `steps` Euler steps; the sync at the end (one queue
 * wait, ~11 ms) is part of the time. Returns whether every sample is finite (read after timing).
 *
 * @example
 * ```ts
 * import { oursSample } from "./sample.ts";
 * import { nn } from "../../mod.ts";
 * const net = new nn.VelocityMLP({ dim: 2, hidden: 8, depth: 1, seed: 0 });
 * const r = await oursSample(net, 16, 2);
 * net.dispose();
 * if (!r.finite) throw new Error("bad");
 * ```
 */
export async function oursSample(
  net: nn.VelocityMLP,
  n: number,
  steps: number,
): Promise<{ ms: number; finite: boolean }> {
  const be = getBackend();
  const x0 = randn([n, 2], { seed: 3 });
  await be.sync();
  try {
    const t0 = performance.now();
    const { x } = await integrate((x, t) => net.forward(x, t), x0, { method: "euler", steps });
    await be.sync();
    const ms = performance.now() - t0;
    const data = await x.data();
    x.dispose();
    return { ms, finite: data.every(Number.isFinite) };
  } finally {
    x0.dispose();
  }
}

/**
 * The `sample` case: one record.
 *
 * @example
 * ```ts
 * import { sampleCase } from "./sample.ts";
 * if (typeof sampleCase !== "function") throw new Error("bad");
 * ```
 */
export async function sampleCase(ctx: CaseContext): Promise<BenchRecord[]> {
  const n = ctx.smoke ? 64 : 10_000, steps = ctx.smoke ? 4 : 100;
  const hidden = ctx.smoke ? 16 : 256, depth = 3, maxReps = ctx.smoke ? 1 : BENCH_REPS;
  let torch: Awaited<ReturnType<typeof torchSample>> = null, torchSkip: string | undefined;
  try {
    torch = await torchSample({ n, steps, hidden, depth, warmup_steps: 5, reps: maxReps });
    if (!torch) torchSkip = "PyTorch is not installed (or python3 is not allowed to run)";
  } catch (e) {
    torchSkip = why(e);
  }
  // Sorted sample times (ms) of the current backend.
  const timeOn = async (): Promise<number[]> => {
    const net = new nn.VelocityMLP({ dim: 2, hidden, depth, seed: 0 });
    const ts: number[] = [];
    try {
      // A few steps compile every pipeline the timed runs use.
      await oursSample(net, n, 2);
      for (let r = 0; r < maxReps; r++) {
        const s = await oursSample(net, n, steps);
        if (!s.finite) throw new Error("our Euler sampler produced non-finite samples");
        ts.push(s.ms);
      }
    } finally {
      net.dispose();
    }
    return ts.sort((a, b) => a - b);
  };
  const ts = await timeOn();
  const wasm = await onWasm(timeOn);
  const wts = "value" in wasm ? wasm.value : [];
  const ms = median(ts), wms = wts.length ? median(wts) : null;
  const ours = n / (ms / 1000), th = torch ? n / (torch.ms / 1000) : null;
  const w = wms === null ? null : n / (wms / 1000);
  return [{
    case: "sample",
    n,
    steps,
    method: "euler",
    adapter: ctx.gpu.info.description,
    ...ourBackend(),
    unit: "samples/s",
    ours: round(ours),
    torch_cpu: round(th),
    // samples/s: the slowest repetition gives the min.
    ...spreadFields("ours", { min: n / (ts.at(-1)! / 1000), max: n / (ts[0]! / 1000) }),
    ...spreadFields(
      "torch_cpu",
      torch ? { min: n / (torch.ms_max / 1000), max: n / (torch.ms_min / 1000) } : null,
    ),
    ratio_vs_torch_cpu: ratio(round(ours), round(th)),
    ours_wasm: round(w),
    ...spreadFields(
      "ours_wasm",
      wts.length ? { min: n / (wts.at(-1)! / 1000), max: n / (wts[0]! / 1000) } : null,
    ),
    ratio_wasm_vs_torch_cpu: ratio(round(w), round(th)),
    ...("value" in wasm ? { wasm_device: wasm.device } : { wasm_skipped: wasm.skipped }),
    ms: { ours: round(ms), wasm: round(wms), torch: round(torch?.ms) },
    reps: { ours: ts.length, torch: torch?.reps ?? null },
    ...(torch ? { torch_threads: torch.threads } : {}),
    ...(torchSkip ? { torch_skipped: torchSkip } : {}),
  }];
}
