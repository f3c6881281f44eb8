/**
 * @file Peer: the flow-matching cases in PyTorch on the CPU (2 threads, as the 2-core machine
 * the WebGPU adapter shares). Each function runs one python subprocess and returns its
 * measurements, or `null` when PyTorch is unavailable. Convention as in the library: t = 0 is
 * noise, t = 1 is data, x_t = (1 − t)·x0 + t·x1, target x1 − x0.
 * @module
 */
import { runTorch } from "./torch.ts";

const PRELUDE = `
import math, time, torch
torch.set_num_threads(ARGS.get("threads", 2))
torch.manual_seed(0)
def median(xs):
    s = sorted(xs); h = len(s) // 2
    return s[h] if len(s) % 2 else (s[h - 1] + s[h]) / 2
def mlp(hidden, depth):
    layers = [torch.nn.Linear(3, hidden)]
    for _ in range(depth - 1):
        layers += [torch.nn.SiLU(), torch.nn.Linear(hidden, hidden)]
    layers += [torch.nn.SiLU(), torch.nn.Linear(hidden, 2)]
    return torch.nn.Sequential(*layers)
S = math.sqrt(0.5)
CENTERS = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1], [S, S], [S, -S], [-S, S], [-S, -S]]) * 5.0
STD = 0.1 ** 0.25
def eight_gaussians(n):
    return CENTERS[torch.randint(0, 8, (n,))] + STD * torch.randn(n, 2)
`;

const CFM = `${PRELUDE}
out = {"threads": torch.get_num_threads(), "version": torch.__version__, "batches": {}}
for b in ARGS["batches"]:
    net = mlp(ARGS["hidden"], ARGS["depth"])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    def step():
        x1 = eight_gaussians(b)
        x0 = torch.randn(b, 2)
        t = torch.rand(b, 1)
        xt = (1 - t) * x0 + t * x1
        v = net(torch.cat([xt, t], 1))
        loss = ((v - (x1 - x0)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    for _ in range(ARGS["warmup"]):
        step()
    rates = []
    for _ in range(ARGS["reps"]):
        t0 = time.perf_counter()
        for _ in range(ARGS["steps"]):
            step()
        rates.append(ARGS["steps"] / (time.perf_counter() - t0))
    ls = [float(l) for l in losses]
    k = min(3, len(ls) // 2) or 1
    out["batches"][str(b)] = {"steps_per_s": median(rates), "steps_per_s_min": min(rates),
                              "steps_per_s_max": max(rates), "loss_first": sum(ls[:k]) / k,
                              "loss_last": sum(ls[-k:]) / k}
print(json.dumps(out))
`;

/** Training throughput of the toy CFM network in PyTorch, per batch size. */
export interface TorchCfmResult {
  threads: number;
  version: string;
  batches: Record<
    string,
    {
      steps_per_s: number;
      steps_per_s_min: number;
      steps_per_s_max: number;
      loss_first: number;
      loss_last: number;
    }
  >;
}

/**
 * Steps/s of CFM training on 8 Gaussians with the MLP [x, t] → hidden × depth → 2 (SiLU) and
 * Adam(1e-3), median of `reps` runs of `steps` steps after `warmup` steps, for each batch size.
 *
 * @example
 * ```ts
 * import { torchCfm } from "./torch_flow.ts";
 * const r = await torchCfm({ batches: [8], hidden: 8, depth: 1, warmup: 1, steps: 2, reps: 1 });
 * if (r !== null && !(r.batches["8"]!.steps_per_s > 0)) throw new Error("bad");
 * ```
 */
export async function torchCfm(args: {
  batches: number[];
  hidden: number;
  depth: number;
  warmup: number;
  steps: number;
  reps: number;
}): Promise<TorchCfmResult | null> {
  return (await runTorch(CFM, args)) as TorchCfmResult | null;
}

const SINKHORN = `${PRELUDE}
out = {"threads": torch.get_num_threads(), "version": torch.__version__, "dims": {}}
n, iters, reg = ARGS["n"], ARGS["iters"], ARGS["reg"]
log_a = -math.log(n)
def couple(x, y):
    # The same computation as ours: squared distances via the Gram matrix, max-normalised.
    c = ((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T).clamp_min(0)
    c = c / c.max().clamp_min(1e-30)
    m = c * (-1 / reg)
    f = torch.zeros(n, 1)
    g = torch.zeros(1, n)
    for _ in range(iters):
        f = log_a - torch.logsumexp(m + g, 1, keepdim=True)
        g = log_a - torch.logsumexp(m + f, 0, keepdim=True)
    log_plan = m + f + g
    err = (torch.exp(f + torch.logsumexp(m + g, 1, keepdim=True)) - 1 / n).abs().sum()
    return log_plan, float(err)
with torch.no_grad():
    for d in ARGS["dims"]:
        x = torch.randn(n, d)
        y = torch.randn(n, d)
        for _ in range(ARGS["warmup"]):
            couple(x, y)
        ts = []
        for _ in range(ARGS["reps"]):
            t0 = time.perf_counter()
            _, err = couple(x, y)
            ts.append(time.perf_counter() - t0)
        out["dims"][str(d)] = {"ms": median(ts) * 1e3, "ms_min": min(ts) * 1e3,
                               "ms_max": max(ts) * 1e3, "marginal_error": err}
print(json.dumps(out))
`;

/** Milliseconds per Sinkhorn coupling in PyTorch, per point dimension. */
export interface TorchSinkhornResult {
  threads: number;
  version: string;
  dims: Record<string, { ms: number; ms_min: number; ms_max: number; marginal_error: number }>;
}

/**
 * Median ms of one log-domain Sinkhorn coupling of n × n Gaussian points (cost, max
 * normalisation, `iters` iterations with `torch.logsumexp`, the plan and its row error).
 *
 * @example
 * ```ts
 * import { torchSinkhorn } from "./torch_flow.ts";
 * const r = await torchSinkhorn({ n: 8, dims: [2], iters: 5, reg: 0.05, warmup: 0, reps: 1 });
 * if (r !== null && !(r.dims["2"]!.ms >= 0)) throw new Error("bad");
 * ```
 */
export async function torchSinkhorn(args: {
  n: number;
  dims: number[];
  iters: number;
  reg: number;
  warmup: number;
  reps: number;
}): Promise<TorchSinkhornResult | null> {
  return (await runTorch(SINKHORN, args)) as TorchSinkhornResult | null;
}

const SAMPLE = `${PRELUDE}
net = mlp(ARGS["hidden"], ARGS["depth"])
n, steps = ARGS["n"], ARGS["steps"]
def sample(k):
    x = torch.randn(n, 2)
    h = 1.0 / steps
    for i in range(k):
        t = torch.full((n, 1), i * h)
        x = x + h * net(torch.cat([x, t], 1))
    return x
with torch.no_grad():
    sample(ARGS["warmup_steps"])
    ts = []
    for _ in range(ARGS["reps"]):
        t0 = time.perf_counter()
        x = sample(steps)
        ts.append(time.perf_counter() - t0)
    ok = bool(torch.isfinite(x).all())
print(json.dumps({"ms": median(ts) * 1e3, "ms_min": min(ts) * 1e3, "ms_max": max(ts) * 1e3,
                  "finite": ok, "reps": len(ts),
                  "threads": torch.get_num_threads(), "version": torch.__version__}))
`;

/** The result of {@linkcode torchSample}. */
export interface TorchSampleResult {
  ms: number;
  ms_min: number;
  ms_max: number;
  finite: boolean;
  reps: number;
  threads: number;
  version: string;
}

/**
 * Median ms to draw `n` samples with `steps` Euler steps through a randomly initialised toy
 * MLP under `torch.no_grad()`.
 *
 * @example
 * ```ts
 * import { torchSample } from "./torch_flow.ts";
 * const r = await torchSample({ n: 16, steps: 2, hidden: 8, depth: 1, warmup_steps: 1, reps: 1 });
 * if (r !== null && !r.finite) throw new Error("bad");
 * ```
 */
export async function torchSample(args: {
  n: number;
  steps: number;
  hidden: number;
  depth: number;
  warmup_steps: number;
  reps: number;
}): Promise<TorchSampleResult | null> {
  return (await runTorch(SAMPLE, args)) as TorchSampleResult | null;
}
