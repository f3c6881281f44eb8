/**
 * @file Bench case `sinkhorn`: ms per log-domain OT coupling of n × n Gaussian points (2-D and
 * 784-D): squared-Euclidean cost divided by its max, then exactly 50 Sinkhorn iterations at
 * reg 0.05 and the log plan; ours (`sinkhorn` from `lib/ot/mod.ts`) vs PyTorch CPU.
 * @module
 */
import {
  div,
  getBackend,
  max,
  maximum,
  pairwiseSqDist,
  randn,
  sinkhorn,
  type Tensor,
  tidy,
} from "../../mod.ts";
import { torchSinkhorn } from "../peers/torch_flow.ts";
import {
  BENCH_REPS,
  type BenchRecord,
  type CaseContext,
  median,
  onWasm,
  ourBackend,
  ratio,
  round,
  spread,
  spreadFields,
  why,
} from "./common.ts";

/**
 * One coupling: cost, max normalisation, `iters` iterations, the log plan. `tol: 0` and
 * `checkEvery: iters` make `sinkhorn` run every iteration and read back once, at the end
 * (its marginal error), which also waits for the queue.
 *
 * @example
 * ```ts
 * import { oursCoupling } from "./sinkhorn.ts";
 * import { randn } from "../../mod.ts";
 * const x = randn([8, 2], { seed: 0 }), y = randn([8, 2], { seed: 1 });
 * const r = await oursCoupling(x, y, 5, 0.05);
 * if (r.iters !== 5 || !Number.isFinite(r.marginalError)) throw new Error("bad");
 * ```
 */
export async function oursCoupling(
  x: Tensor,
  y: Tensor,
  iters: number,
  reg: number,
): Promise<{ iters: number; marginalError: number }> {
  const cost = tidy(() => {
    const c = pairwiseSqDist(x, y);
    return div(c, maximum(max(c), 1e-30));
  });
  try {
    const r = await sinkhorn(cost, { reg, maxIters: iters, tol: 0, checkEvery: iters });
    r.logPlan.dispose();
    return { iters: r.iters, marginalError: r.marginalError };
  } finally {
    cost.dispose();
  }
}

/**
 * The `sinkhorn` case: one record per point dimension.
 *
 * @example
 * ```ts
 * import { sinkhornCase } from "./sinkhorn.ts";
 * if (typeof sinkhornCase !== "function") throw new Error("bad");
 * ```
 */
export async function sinkhornCase(ctx: CaseContext): Promise<BenchRecord[]> {
  const n = ctx.smoke ? 16 : 1024, dims = [2, 784], iters = 50, reg = 0.05;
  const warmup = 1, reps = ctx.smoke ? 1 : BENCH_REPS;
  let torch: Awaited<ReturnType<typeof torchSinkhorn>> = null, torchSkip: string | undefined;
  try {
    torch = await torchSinkhorn({ n, dims, iters, reg, warmup, reps });
    if (!torch) torchSkip = "PyTorch is not installed (or python3 is not allowed to run)";
  } catch (e) {
    torchSkip = why(e);
  }
  const records: BenchRecord[] = [];
  for (const d of dims) {
    // Times (ms) and the last result of `reps` couplings on the current backend.
    const timeOn = async () => {
      const x = randn([n, d], { seed: 1 }), y = randn([n, d], { seed: 2 });
      const ts: number[] = [];
      let last = { iters: 0, marginalError: NaN };
      try {
        for (let i = 0; i < warmup; i++) await oursCoupling(x, y, iters, reg);
        await getBackend().sync();
        for (let i = 0; i < reps; i++) {
          const t0 = performance.now();
          last = await oursCoupling(x, y, iters, reg);
          ts.push(performance.now() - t0);
        }
      } finally {
        x.dispose();
        y.dispose();
      }
      if (last.iters !== iters || !Number.isFinite(last.marginalError)) {
        throw new Error(
          `our Sinkhorn ran ${last.iters} iterations with marginal error ${last.marginalError}`,
        );
      }
      return { ts, last };
    };
    const { ts, last } = await timeOn();
    const wasm = await onWasm(timeOn);
    const w = "value" in wasm ? wasm.value : null;
    const ours = median(ts);
    const th = torch?.dims[String(d)] ?? null;
    records.push({
      case: "sinkhorn",
      n,
      dim: d,
      iters,
      reg,
      adapter: ctx.gpu.info.description,
      ...ourBackend(),
      unit: "ms/coupling",
      ours: round(ours),
      torch_cpu: round(th?.ms),
      ...spreadFields("ours", spread(ts)),
      ...spreadFields("torch_cpu", th ? { min: th.ms_min, max: th.ms_max } : null),
      // Lower is better here: the ratio is the speed-up, torch ms / our ms.
      speedup_vs_torch_cpu: ratio(round(th?.ms), round(ours)),
      ours_wasm: round(w ? median(w.ts) : null),
      ...spreadFields("ours_wasm", w ? spread(w.ts) : null),
      speedup_wasm_vs_torch_cpu: ratio(round(th?.ms), round(w ? median(w.ts) : null)),
      ...("value" in wasm ? { wasm_device: wasm.device } : { wasm_skipped: wasm.skipped }),
      marginal_error: {
        ours: round(last.marginalError),
        wasm: round(w?.last.marginalError),
        torch: round(th?.marginal_error),
      },
      reps,
      ...(torch ? { torch_threads: torch.threads } : {}),
      ...(torchSkip ? { torch_skipped: torchSkip } : {}),
    });
  }
  return records;
}
