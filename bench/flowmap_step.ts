/**
 * @file Benchmark of one `train:flowmap` step at seed 004's size (FlowMapMLP 4×256 SiLU,
 * 1536 diagonal + 512 off-diagonal rows, AdamW) for each objective, on the current backend and
 * in PyTorch on the CPU (forward-mode AD for LSD/ESD) when available. Prints one JSON line per
 * measurement: ms per step (median and best of the repeats: the best is the least disturbed by
 * other jobs on a shared machine), dispatches and matmul GFLOP per step, the
 * effective rate, and the projected time of a 20k-step run. Also a no-tape map evaluation of
 * 16384 rows (the sampler/KL path). Run it beside the peers in the same run: the machine is
 * shared, so absolute times move with its load (the load average is printed).
 *
 *   deno run --allow-read=.,/tmp --allow-env=FLOWGPU_BACKEND --allow-sys=loadavg \
 *     --allow-run=python3,/usr/bin/python3 bench/flowmap_step.ts
 *   deno run … bench/flowmap_step.ts --reps 3 --steps 5 --methods lsd,psd
 * @module
 */
import { parseArgs } from "node:util";
import {
  flowMapLoss,
  type FlowMapMethod,
  Generator,
  getBackend,
  init,
  nn,
  optim,
  rand,
  randn,
  sampleToy,
  type Tensor,
  valueAndGrad,
} from "../mod.ts";
import { runTorch } from "./peers/torch.ts";
import { median } from "./cases/common.ts";
import process from "node:process";

const HIDDEN = 256, DEPTH = 4, ROWS = 2048, DIAG = 1536;
/** Multiply-adds ×2 of one forward row: 4→256, 3×(256→256), 256→2. */
const F = 2 * (4 * HIDDEN + (DEPTH - 1) * HIDDEN * HIDDEN + HIDDEN * 2);
/**
 * Forward-pass equivalents per row (a backward costs two): diagonal fwd+bwd 3; LSD primal and
 * tangent fwd 2, their bwd 4, teacher 1; PSD student fwd+bwd 3, two teachers 2; ESD as LSD.
 */
const PASSES: Record<string, number> = { lsd: 7, psd: 5, esd: 7 };

function stats(): { dispatches: number } | null {
  // deno-lint-ignore no-explicit-any
  const be = getBackend() as any;
  return typeof be.stats === "function" ? be.stats() : null;
}

/**
 * One `train:flowmap` step at seed 004's size for `method` ("diagonal": every row diagonal),
 * as a function returning the loss (undisposed), plus `dispose` for the network and optimizer.
 * Shared with `bench/cases/dispatch_profile.ts`.
 */
export function flowMapStep(
  method: FlowMapMethod | "diagonal",
): { step: () => Tensor; dispose: () => void; diagRows: number } {
  const net = new nn.FlowMapMLP({ dim: 2, hidden: HIDDEN, depth: DEPTH, seed: 1 });
  const params = net.parameters();
  const opt = new optim.AdamW({ lr: 2e-4, weightDecay: 1e-4 });
  const gen = new Generator(0);
  const phi = (x: Tensor, s: Tensor, t: Tensor) => net.forward(x, s, t);
  const teacher = (x: Tensor, s: Tensor, t: Tensor) => net.teacher(x, s, t);
  let x1: Tensor;
  const diagRows = method === "diagonal" ? ROWS : DIAG;
  const vg = valueAndGrad((_p: Tensor[]) =>
    flowMapLoss(phi, x1, {
      method: method === "diagonal" ? "lsd" : method,
      diagonalRows: diagRows,
      generator: gen,
      teacher,
    }).loss
  );
  const step = () => {
    x1 = sampleToy("checkerboard", ROWS, gen);
    const [loss, grads] = vg(params);
    opt.step(params, grads);
    grads.forEach((g) => g.dispose());
    x1.dispose();
    return loss;
  };
  return {
    step,
    dispose: () => {
      net.dispose();
      opt.dispose();
    },
    diagRows,
  };
}

async function engineStep(
  method: FlowMapMethod | "diagonal",
  steps: number,
  reps: number,
): Promise<Record<string, unknown>> {
  const { step, dispose, diagRows } = flowMapStep(method);
  for (let i = 0; i < 3; i++) await step().item();
  const times: number[] = [], cpus: number[] = [];
  let disp = 0;
  for (let r = 0; r < reps; r++) {
    const s0 = stats(), t0 = performance.now(), c0 = process.cpuUsage();
    let last: Tensor | null = null;
    for (let i = 0; i < steps; i++) {
      last?.dispose();
      last = step();
    }
    await last!.item();
    last!.dispose();
    times.push((performance.now() - t0) / steps);
    const c1 = process.cpuUsage(c0);
    cpus.push((c1.user + c1.system) / 1000 / steps);
    const s1 = stats();
    if (s0 && s1) disp = (s1.dispatches - s0.dispatches) / steps;
  }
  dispose();
  const ms = median(times), best = Math.min(...times);
  const gflop = (diagRows * 3 + (ROWS - diagRows) * (PASSES[method] ?? 0)) * F / 1e9;
  return {
    case: "flowmap-step",
    impl: `flowgpu-${getBackend().name}`,
    method,
    ms,
    bestMs: best,
    // Process CPU time (every thread: lavapipe's or the wasm workers'): less disturbed by
    // other jobs on a shared machine than the wall time.
    cpuMs: median(cpus),
    dispatches: disp || null,
    gflop,
    gflops: gflop / (ms / 1000),
    projected20kMin: (ms * 20000) / 60000,
    projected20kMinBest: (best * 20000) / 60000,
  };
}

async function engineEval(rows: number, reps: number): Promise<Record<string, unknown>> {
  const net = new nn.FlowMapMLP({ dim: 2, hidden: HIDDEN, depth: DEPTH, seed: 1 });
  const x = randn([rows, 2], { seed: 1 }),
    s = rand([rows], { seed: 2 }),
    t = rand([rows], { seed: 3 });
  const times: number[] = [];
  for (let r = 0; r < reps + 1; r++) {
    const t0 = performance.now();
    const y = net.forward(x, s, t);
    await y.data();
    y.dispose();
    if (r > 0) times.push(performance.now() - t0);
  }
  net.dispose();
  [x, s, t].forEach((v) => v.dispose());
  const ms = median(times);
  return {
    case: "flowmap-eval",
    impl: `flowgpu-${getBackend().name}`,
    rows,
    ms,
    gflops: (rows * F) / 1e9 / (ms / 1000),
    // seed 004's table: 100k samples at N = 1 + 2 + 4 + 8 + 16 map evaluations.
    projectedKlTableMin: (ms * (100000 / rows) * 31) / 60000,
  };
}

const TORCH = `
import math, time, torch
import torch.autograd.forward_ad as fwAD
torch.set_num_threads(ARGS["threads"])
torch.manual_seed(0)
H, D, R, DG = ARGS["hidden"], ARGS["depth"], ARGS["rows"], ARGS["diag"]
layers = [torch.nn.Linear(4, H)]
for _ in range(D - 1):
    layers += [torch.nn.SiLU(), torch.nn.Linear(H, H)]
layers += [torch.nn.SiLU(), torch.nn.Linear(H, 2)]
net = torch.nn.Sequential(*layers)
opt = torch.optim.AdamW(net.parameters(), lr=2e-4, weight_decay=1e-4)
phi = lambda x, s, t: net(torch.cat([x, s, t], 1))
def board(n):
    ij = torch.randint(0, 4, (n, 2)).float()
    ij[:, 1] = (ij[:, 1] // 2) * 2 + (ij[:, 0] % 2)
    return ij + torch.rand(n, 2) - 2
def step(method):
    x1 = board(R); x0 = torch.randn(R, 2)
    t = torch.rand(DG, 1); it = (1 - t) * x0[:DG] + t * x1[:DG]
    loss = ((phi(it, t, t) - (x1[:DG] - x0[:DG])) ** 2).mean()
    if method != "diagonal":
        a, b = torch.rand(R - DG, 1), torch.rand(R - DG, 1)
        s, t = torch.minimum(a, b), torch.maximum(a, b)
        xs = (1 - s) * x0[DG:] + s * x1[DG:]
        if method == "lsd":
            with fwAD.dual_level():
                td = fwAD.make_dual(t, torch.ones_like(t))
                X = xs + (td - s) * phi(xs, s, td)
                Xp, dX = fwAD.unpack_dual(X)
            with torch.no_grad():
                b_ = phi(Xp, t, t)
            loss = loss + ((dX - b_) ** 2).mean()
        else:
            u = (s + t) / 2
            with torch.no_grad():
                p1 = phi(xs, s, u); p2 = phi(xs + (u - s) * p1, u, t)
            loss = loss + ((phi(xs, s, t) - (p1 + p2) / 2) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
out = {"threads": torch.get_num_threads(), "version": torch.__version__, "ms": {}}
for m in ARGS["methods"]:
    try:
        for _ in range(2): step(m)
        ts = []
        for _ in range(ARGS["reps"]):
            t0 = time.perf_counter()
            for _ in range(ARGS["steps"]): step(m)
            ts.append((time.perf_counter() - t0) / ARGS["steps"] * 1e3)
        ts.sort(); out["ms"][m] = ts[len(ts) // 2]; out.setdefault("best", {})[m] = ts[0]
    except Exception as e:
        out["ms"][m] = None; out.setdefault("errors", {})[m] = str(e)[:200]
print(json.dumps(out))
`;

if (import.meta.main) {
  await init(); // FLOWGPU_BACKEND, else WebGPU when an adapter exists
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      reps: { type: "string", default: "3" },
      steps: { type: "string", default: "5" },
      methods: { type: "string", default: "diagonal,lsd,psd,esd" },
      // `--torch=false` (or `--no-torch`) skips the PyTorch peer.
      torch: { type: "string", default: "true" },
      "no-torch": { type: "boolean", default: false },
    },
  });
  const reps = Number(v.reps), steps = Number(v.steps);
  const methods = v.methods!.split(",") as (FlowMapMethod | "diagonal")[];
  const load = () => {
    try {
      return Deno.loadavg()[0];
    } catch {
      return null; // needs --allow-sys=loadavg
    }
  };
  for (const m of methods) {
    console.log(JSON.stringify({ ...await engineStep(m, steps, reps), load: load() }));
  }
  console.log(JSON.stringify({ ...await engineEval(16384, reps), load: load() }));
  if (v.torch !== "false" && !v["no-torch"]) {
    const r = await runTorch(TORCH, {
      threads: 2,
      hidden: HIDDEN,
      depth: DEPTH,
      rows: ROWS,
      diag: DIAG,
      methods: methods.filter((m) => m !== "esd"),
      reps,
      steps,
    }) as {
      ms: Record<string, number | null>;
      best?: Record<string, number>;
      threads: number;
      version: string;
    } | null;
    if (r) {
      for (const [m, ms] of Object.entries(r.ms)) {
        console.log(JSON.stringify({
          case: "flowmap-step",
          impl: `torch-cpu-${r.threads}t`,
          version: r.version,
          method: m,
          ms,
          bestMs: r.best?.[m] ?? null,
          projected20kMin: ms === null ? null : (ms * 20000) / 60000,
          load: load(),
        }));
      }
    }
  }
}
