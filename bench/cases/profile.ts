/**
 * @file Phase profile of the `toy-cfm` step and of one Sinkhorn iteration on the current
 * backend, behind the analysis in `docs/bench_results.md`. Each phase runs `reps` times back
 * to back and then syncs once, so the ~11 ms queue wait is amortised; dispatch counts come
 * from the WebGPU backend's `stats()` (0 on the CPU backend).
 *
 * Run: `deno run --allow-read=. --allow-env=FLOWGPU_BACKEND bench/cases/profile.ts [--batch 1024]`
 * @module
 */
import { parseArgs } from "node:util";
import {
  add,
  cfmLoss,
  div,
  eightGaussians,
  full,
  Generator,
  getBackend,
  init,
  logSumExp,
  matmul,
  max,
  nn,
  optim,
  pairwiseSqDist,
  randn,
  sub,
  type Tensor,
  tidy,
  valueAndGrad,
  zeros,
} from "../../mod.ts";

/** One profiled phase. */
export interface PhaseTiming {
  phase: string;
  /** Milliseconds per repetition. */
  ms: number;
  /** Dispatches per repetition. */
  dispatches: number;
}

function dispatchCount(): number {
  const be = getBackend() as { stats?: () => { dispatches: number } };
  return be.stats?.().dispatches ?? 0;
}

/**
 * Time `fn` over `reps` back-to-back calls (after 2 warm-up calls) with one sync at the end.
 *
 * @example
 * ```ts
 * import { timePhase } from "./profile.ts";
 * import { add, tensor, tidy } from "../../mod.ts";
 * const x = tensor([1, 2]);
 * const t = await timePhase("add", () => tidy(() => void add(x, 1)), 2);
 * if (!(t.ms >= 0)) throw new Error("bad");
 * ```
 */
export async function timePhase(
  phase: string,
  fn: () => void,
  reps: number,
): Promise<PhaseTiming> {
  const be = getBackend();
  for (let i = 0; i < 2; i++) fn();
  await be.sync();
  const d0 = dispatchCount(), t0 = performance.now();
  for (let i = 0; i < reps; i++) fn();
  await be.sync();
  return {
    phase,
    ms: (performance.now() - t0) / reps,
    dispatches: (dispatchCount() - d0) / reps,
  };
}

/**
 * Phases of one toy-cfm training step (MLP [x, t] → hidden³ → 2, Adam) at batch `batch`.
 *
 * @example
 * ```ts
 * import { profileToyCfm } from "./profile.ts";
 * const rows = await profileToyCfm(8, { hidden: 8, reps: 1 });
 * if (rows.length < 5) throw new Error("bad");
 * ```
 */
export async function profileToyCfm(
  batch: number,
  opts: { hidden?: number; reps?: number } = {},
): Promise<PhaseTiming[]> {
  const hidden = opts.hidden ?? 256, reps = opts.reps ?? 10;
  const net = new nn.VelocityMLP({ dim: 2, hidden, depth: 3, seed: 0 });
  const params = net.parameters();
  const opt = new optim.Adam({ lr: 1e-3 });
  const gen = new Generator(1);
  const lossFn = valueAndGrad((_p: Tensor[], x1: Tensor) =>
    cfmLoss((x, t) => net.forward(x, t), x1, { generator: gen }).loss
  );
  const x1 = eightGaussians(batch, { generator: gen });
  const [l0, g0] = lossFn(params, x1);
  l0.dispose();
  const h = randn([batch, hidden], { seed: 1 }), w = randn([hidden, hidden], { seed: 2 });
  const z = zeros([4]);
  const drop = (ts: Tensor[]) => ts.forEach((t) => t.dispose());
  try {
    return [
      await timePhase("data (host 8 Gaussians)", () => {
        eightGaussians(batch, { generator: gen }).dispose();
      }, reps),
      await timePhase("forward + loss", () =>
        tidy(() => {
          cfmLoss((x, t) => net.forward(x, t), x1, { generator: gen });
        }), reps),
      await timePhase("forward + backward", () => {
        const [l, g] = lossFn(params, x1);
        drop([l, ...g]);
      }, reps),
      await timePhase("Adam", () => opt.step(params, g0), reps),
      await timePhase("full step", () => {
        const x = eightGaussians(batch, { generator: gen });
        const [l, g] = lossFn(params, x);
        opt.step(params, g);
        drop([l, ...g, x]);
      }, reps),
      await timePhase(`6 hidden matmuls ${batch}x${hidden}x${hidden}`, () =>
        tidy(() => {
          for (let i = 0; i < 2; i++) {
            matmul(h, w);
            matmul(h, w, { transB: true });
            matmul(h, h, { transA: true });
          }
        }), reps),
      await timePhase("66 tiny dispatches", () =>
        tidy(() => {
          let y = z;
          for (let i = 0; i < 66; i++) y = add(y, 1);
        }), reps),
    ];
  } finally {
    drop([x1, ...g0, h, w, z]);
    net.dispose();
    opt.dispose();
  }
}

/**
 * Phases of one log-domain Sinkhorn iteration on an n × n cost, plus the 784-D cost itself.
 *
 * @example
 * ```ts
 * import { profileSinkhorn } from "./profile.ts";
 * const rows = await profileSinkhorn(8, { reps: 1, dim: 4 });
 * if (rows.length !== 5) throw new Error("bad");
 * ```
 */
export async function profileSinkhorn(
  n: number,
  opts: { reps?: number; dim?: number } = {},
): Promise<PhaseTiming[]> {
  const reps = opts.reps ?? 10, dim = opts.dim ?? 784;
  const M = randn([n, n], { seed: 1 }), g = full([1, n], 0);
  const x = randn([n, dim], { seed: 2 }), y = randn([n, dim], { seed: 3 });
  const logA = -Math.log(n);
  try {
    return [
      await timePhase(`add(M, g) [${n}, ${n}]`, () => tidy(() => void add(M, g)), reps),
      await timePhase("logSumExp axis 1", () => tidy(() => void logSumExp(M, 1, true)), reps),
      await timePhase("logSumExp axis 0", () => tidy(() => void logSumExp(M, 0, true)), reps),
      await timePhase("one Sinkhorn iteration", () =>
        tidy(() => {
          const f = sub(logA, logSumExp(add(M, g), 1, true));
          sub(logA, logSumExp(add(M, f), 0, true));
        }), reps),
      await timePhase(`cost ${dim}-D (pairwise + max-norm)`, () =>
        tidy(() => {
          const c = pairwiseSqDist(x, y);
          div(c, max(c));
        }), reps),
    ];
  } finally {
    for (const t of [M, g, x, y]) t.dispose();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { batch: { type: "string", multiple: true }, n: { type: "string", default: "1024" } },
  });
  const print = (rows: PhaseTiming[]) => {
    for (const r of rows) {
      console.log(
        `${r.phase.padEnd(36)} ${r.ms.toFixed(2).padStart(8)} ms ${
          r.dispatches.toFixed(1).padStart(6)
        } dispatches`,
      );
    }
  };
  await init();
  console.log(`backend: ${getBackend().description}`);
  for (const b of (values.batch ?? ["1024", "256"]).map(Number)) {
    console.log(`\ntoy-cfm step, batch ${b}`);
    print(await profileToyCfm(b));
  }
  console.log(`\nSinkhorn, n = ${values.n}`);
  print(await profileSinkhorn(Number(values.n)));
}
