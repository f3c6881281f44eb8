/**
 * @file Bench case `dit`: training steps/s of a class-conditional DiT on Fashion-MNIST shapes
 * (28×28×1, patch 4 → 49 tokens, hidden 128, depth 4, 4 heads, MLP ratio 4, 10 classes with
 * 10 % label dropout; the `train:cfm --model dit-tiny --hidden 128 --depth 4` network) with the
 * CFM loss and Adam(1e-4) at batch 64: ours vs PyTorch CPU (2 threads, the same network from
 * tasks/torch/models.py) vs tfjs-webgpu on the same adapter (the same network again,
 * `bench/peers/tfjs_dit.ts`, timed over fewer steps: see {@linkcode TFJS_DIT}).
 * {@linkcode ditStep} is shared with `bench/cases/dispatch_profile.ts dit`.
 * @module
 */
import process from "node:process";
import {
  cfmLoss,
  Generator,
  getBackend,
  loadFashionMnist,
  nn,
  optim,
  sliceRows,
  type Tensor,
  tensor,
  valueAndGrad,
} from "../../mod.ts";
import { tfjsDit, type TfjsDitResult } from "../peers/tfjs_dit.ts";
import { runTorch, startTorch } from "../peers/torch.ts";
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

/** The network and batch of the case. */
export interface DitBenchConfig {
  batch: number;
  hidden: number;
  depth: number;
  heads: number;
  patch: number;
  /** Image side (square, one channel). */
  size: number;
  classes: number;
  warmup: number;
  /** Steps per timed repetition. */
  steps: number;
  reps: number;
}

/** The issue-14 configuration (hidden 128, depth 4, patch 4, batch 64, 28×28×1). */
export const DIT_BENCH: DitBenchConfig = {
  batch: 64,
  hidden: 128,
  depth: 4,
  heads: 4,
  patch: 4,
  size: 28,
  classes: 10,
  warmup: 3,
  steps: 5,
  reps: BENCH_REPS,
};

/**
 * How the tfjs-webgpu peer is timed: on a CPU adapter one of its DiT steps takes seconds, so it
 * gets 1 warm-up step and up to 3 timed repetitions of 1 step each, none started after 60 s of
 * timing. Each repetition ends with a 4-byte read of the loss, negligible beside such a step.
 */
export const TFJS_DIT = { warmup: 1, steps: 1, reps: 3, maxSeconds: 60 } as const;

/** Rounds of the alternating wasm-vs-PyTorch measurement ({@linkcode pairedDit}). */
const PAIRED_ROUNDS = 15;
/** Pause before each of {@linkcode pairedDit}'s repetitions (see there). */
const IDLE_MS = 400;

/** Images per data pool: steps cycle through pool / batch disjoint batches. */
const POOL_BATCHES = 8;

/**
 * Fashion-MNIST's first `n` training images ([−1, 1]) and labels, or seeded noise and labels
 * when the dataset is not installed (the step's cost does not depend on the pixels).
 */
async function dataPool(
  n: number,
  size: number,
): Promise<{ images: Float32Array; labels: Float32Array; source: string }> {
  if (size === 28) {
    try {
      const ds = await loadFashionMnist({ limit: n });
      return { images: ds.images, labels: ds.labels, source: "fashion-mnist" };
    } catch {
      // Not installed or not readable: fall through to noise.
    }
  }
  const images = new Float32Array(n * size * size), labels = new Float32Array(n);
  let s = 12345;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  for (let i = 0; i < images.length; i++) images[i] = 2 * u() - 1;
  for (let i = 0; i < n; i++) labels[i] = Math.floor(u() * 10);
  return { images, labels, source: "noise" };
}

/**
 * One DiT training step on the current backend (CFM loss on a batch of the pool, Adam), as a
 * function returning the loss (undisposed), plus `dispose` for the network, optimizer and data.
 *
 * @example
 * ```ts
 * import { ditStep } from "./dit.ts";
 * const s = await ditStep({ batch: 2, hidden: 16, depth: 1, heads: 2, patch: 4, size: 8, classes: 10, warmup: 0, steps: 1, reps: 1 });
 * const l = s.step();
 * if (!Number.isFinite(await l.item())) throw new Error("bad");
 * l.dispose();
 * s.dispose();
 * ```
 */
export async function ditStep(
  cfg: DitBenchConfig,
): Promise<{ step: () => Tensor; dispose: () => void; source: string; net: nn.DiT }> {
  const { batch, size } = cfg;
  const pool = await dataPool(batch * POOL_BATCHES, size);
  const images = tensor(pool.images, [batch * POOL_BATCHES, 1, size, size]);
  const labels = tensor(pool.labels, [batch * POOL_BATCHES]);
  const net = new nn.DiT({
    inputSize: size,
    patchSize: cfg.patch,
    inChannels: 1,
    hiddenSize: cfg.hidden,
    depth: cfg.depth,
    numHeads: cfg.heads,
    numClasses: cfg.classes,
    classDropoutProb: 0.1,
    seed: 0,
  });
  const params = net.parameters();
  const opt = new optim.Adam({ lr: 1e-4 });
  const gen = new Generator(1);
  const lossFn = valueAndGrad((_p: Tensor[], x1: Tensor, y: Tensor) =>
    cfmLoss((x, t, c) => net.forward(x, t, c), x1, { generator: gen, y }).loss
  );
  let i = 0;
  const step = () => {
    const k = (i++ % POOL_BATCHES) * batch;
    const x1 = sliceRows(images, k, k + batch), y = sliceRows(labels, k, k + batch);
    try {
      const [loss, grads] = lossFn(params, x1, y);
      opt.step(params, grads);
      for (const g of grads) g.dispose();
      return loss;
    } finally {
      x1.dispose();
      y.dispose();
    }
  };
  return {
    step,
    net,
    source: pool.source,
    dispose: () => {
      net.dispose();
      opt.dispose();
      images.dispose();
      labels.dispose();
    },
  };
}

/**
 * Our steps/s: `warmup` steps, then `reps` timed runs of `steps` steps, each ending with one
 * `sync()`; losses are read after timing.
 *
 * @example
 * ```ts
 * import { oursDit } from "./dit.ts";
 * const r = await oursDit({ batch: 2, hidden: 16, depth: 1, heads: 2, patch: 4, size: 8, classes: 10, warmup: 1, steps: 1, reps: 1 });
 * if (!(r.rate.median > 0)) throw new Error("bad");
 * ```
 */
export async function oursDit(
  cfg: DitBenchConfig,
): Promise<
  { rate: Spread; cpuMsPerStep: number; lossFirst: number; lossLast: number; source: string }
> {
  const be = getBackend();
  const s = await ditStep(cfg);
  const losses: Tensor[] = [];
  try {
    for (let i = 0; i < cfg.warmup; i++) losses.push(s.step());
    await be.sync();
    const rates: number[] = [];
    const c0 = process.cpuUsage();
    for (let r = 0; r < cfg.reps; r++) {
      const t0 = performance.now();
      for (let i = 0; i < cfg.steps; i++) losses.push(s.step());
      await be.sync();
      rates.push(cfg.steps / ((performance.now() - t0) / 1000));
    }
    const cu = process.cpuUsage(c0);
    const ls: number[] = [];
    for (const l of losses) ls.push(await l.item());
    const k = Math.max(1, Math.min(3, ls.length >> 1));
    const avg = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    return {
      rate: spread(rates),
      cpuMsPerStep: (cu.user + cu.system) / 1000 / (cfg.reps * cfg.steps),
      lossFirst: avg(ls.slice(0, k)),
      lossLast: avg(ls.slice(-k)),
      source: s.source,
    };
  } finally {
    for (const l of losses) l.dispose();
    s.dispose();
  }
}

// The PyTorch step, shared by the one-shot run (TORCH_DIT) and the alternating one (TORCH_SERVE).
const TORCH_SETUP = `
import gzip, os, sys, time, torch
import numpy as np
sys.path.insert(0, ARGS["models_dir"])
from models import DiT
torch.set_num_threads(2)
torch.manual_seed(0)
def median(xs):
    s = sorted(xs); h = len(s) // 2
    return s[h] if len(s) % 2 else (s[h - 1] + s[h]) / 2
b, size, n = ARGS["batch"], ARGS["size"], ARGS["batch"] * ARGS["pool_batches"]
source = "noise"
images = torch.rand(n, 1, size, size) * 2 - 1
labels = torch.randint(0, 10, (n,))
path = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
if size == 28 and os.path.exists(path):
    with gzip.open(path) as f:
        px = np.frombuffer(f.read(16 + n * 784)[16:], dtype=np.uint8).astype(np.float32)
    with gzip.open(path.replace("images-idx3", "labels-idx1")) as f:
        lb = np.frombuffer(f.read(8 + n)[8:], dtype=np.uint8).astype(np.int64)
    images = torch.from_numpy(px.reshape(n, 1, 28, 28) / 127.5 - 1)
    labels = torch.from_numpy(lb.copy())
    source = "fashion-mnist"
net = DiT(input_size=size, patch_size=ARGS["patch"], in_channels=1, hidden_size=ARGS["hidden"],
          depth=ARGS["depth"], num_heads=ARGS["heads"], num_classes=ARGS["classes"],
          class_dropout_prob=0.1)
net.train()
opt = torch.optim.Adam(net.parameters(), lr=1e-4)
losses = []
it = [0]
def step():
    k = (it[0] % ARGS["pool_batches"]) * b
    it[0] += 1
    x1, y = images[k:k + b], labels[k:k + b]
    x0 = torch.randn_like(x1)
    t = torch.rand(b)
    tt = t.view(-1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * x1
    loss = ((net(xt, t, y) - (x1 - x0)) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(loss.detach())
`;

const TORCH_DIT = `${TORCH_SETUP}
for _ in range(ARGS["warmup"]):
    step()
rates = []
c0 = time.process_time()
for _ in range(ARGS["reps"]):
    t0 = time.perf_counter()
    for _ in range(ARGS["steps"]):
        step()
    rates.append(ARGS["steps"] / (time.perf_counter() - t0))
cpu_ms = (time.process_time() - c0) * 1e3 / (ARGS["reps"] * ARGS["steps"])
ls = [float(l) for l in losses]
k = min(3, len(ls) // 2) or 1
sdpa = hasattr(torch.nn.functional, "scaled_dot_product_attention")
print(json.dumps({"steps_per_s": median(rates), "steps_per_s_min": min(rates),
                  "steps_per_s_max": max(rates), "cpu_ms_per_step": cpu_ms, "loss_first": sum(ls[:k]) / k,
                  "loss_last": sum(ls[-k:]) / k, "threads": torch.get_num_threads(),
                  "version": torch.__version__, "source": source,
                  "attention": "F.scaled_dot_product_attention" if sdpa else "matmul-softmax-matmul"}))
`;

// Warm up, say so, then time ARGS["steps"] steps for every line read (one JSON line each).
const TORCH_SERVE = `${TORCH_SETUP}
for _ in range(ARGS["warmup"]):
    step()
print(json.dumps({"ready": True}))
for line in sys.stdin:
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(ARGS["steps"]):
        step()
    float(losses[-1])
    dt = time.perf_counter() - t0
    losses.clear()
    print(json.dumps({"steps_per_s": ARGS["steps"] / dt,
                      "cpu_ms_per_step": (time.process_time() - c0) * 1e3 / ARGS["steps"]}))
`;

/** The alternating measurement of {@linkcode pairedDit}. */
export interface PairedDitResult {
  /** Our steps/s over PyTorch's, per round. */
  ratio: Spread;
  /** Every round's ratio, in order. */
  ratios: number[];
  /** The rounds' ratios' mean and sample standard deviation (0 for one round). */
  ratioMean: number;
  ratioStd: number;
  ours: Spread;
  torch: Spread;
  /** Every round's steps/s, ours and PyTorch's, in order (which side a disturbance hit). */
  oursRates: number[];
  torchRates: number[];
  /**
   * Every round's process CPU ms per step over PyTorch's (ours / theirs: below 1 is less
   * work): time a thread spent descheduled by another job does not count, so a round that
   * only one side's wall-clock shows disturbed keeps its ratio here.
   */
  cpuRatios: number[];
  rounds: number;
}

/**
 * Our step on the current backend against PyTorch's, alternating: `rounds` rounds of one
 * repetition (`cfg.steps` steps) each, the order flipping every round, PyTorch in one process
 * kept running (bench/peers/torch.ts `startTorch`). Each round's ratio compares two runs a few
 * seconds apart, so a machine whose speed drifts over minutes (a shared VM: the same step
 * measured 250–390 ms within half an hour here) moves both alike; the one-shot figures of the
 * `dit` case run minutes apart. Every repetition waits 400 ms first, so neither starts while the
 * other's threads are still busy. `null` without PyTorch.
 *
 * @example
 * ```ts
 * import { pairedDit } from "./dit.ts";
 * const r = await pairedDit({ batch: 2, hidden: 16, depth: 1, heads: 2, patch: 4, size: 8, classes: 10, warmup: 1, steps: 1, reps: 1 }, 1);
 * if (r !== null && !(r.ratio.median > 0)) throw new Error("bad");
 * ```
 */
export async function pairedDit(
  cfg: DitBenchConfig,
  rounds: number,
): Promise<PairedDitResult | null> {
  const modelsDir = new URL("../../tasks/torch/", import.meta.url).pathname;
  const torch = await startTorch(TORCH_SERVE, {
    ...cfg,
    pool_batches: POOL_BATCHES,
    models_dir: modelsDir,
  });
  if (torch === null) return null;
  const be = getBackend();
  const s = await ditStep(cfg);
  try {
    for (let i = 0; i < cfg.warmup; i++) s.step().dispose();
    await be.sync();
    let oursCpu = 0, torchCpu = 0;
    const oursRep = async () => {
      const losses: Tensor[] = [];
      const c0 = process.cpuUsage(), t0 = performance.now();
      for (let i = 0; i < cfg.steps; i++) losses.push(s.step());
      await losses[losses.length - 1]!.item();
      const rate = cfg.steps / ((performance.now() - t0) / 1000);
      const cu = process.cpuUsage(c0);
      oursCpu = (cu.user + cu.system) / 1000 / cfg.steps;
      for (const l of losses) l.dispose();
      return rate;
    };
    const torchRep = async () => {
      const r = await torch.ask("rep") as { steps_per_s: number; cpu_ms_per_step: number };
      torchCpu = r.cpu_ms_per_step;
      return r.steps_per_s;
    };
    const ours: number[] = [], theirs: number[] = [], ratios: number[] = [], cpu: number[] = [];
    // Each repetition starts on an idle machine: after answering, PyTorch's BLAS/OpenMP threads
    // keep spinning (measured: 80–120 ms of CPU in the 200 ms after a repetition), which slowed
    // whatever ran next, i.e. our repetition in every other round.
    const idle = () => new Promise((res) => setTimeout(res, IDLE_MS));
    const oursRepIdle = async () => (await idle(), await oursRep());
    const torchRepIdle = async () => (await idle(), await torchRep());
    for (let r = 0; r < rounds; r++) {
      let a: number, b: number;
      if (r % 2 === 0) {
        a = await oursRepIdle();
        b = await torchRepIdle();
      } else {
        b = await torchRepIdle();
        a = await oursRepIdle();
      }
      ours.push(a);
      theirs.push(b);
      ratios.push(a / b);
      cpu.push(oursCpu / torchCpu);
    }
    const mean = ratios.reduce((a, x) => a + x, 0) / rounds;
    const std = rounds > 1
      ? Math.sqrt(ratios.reduce((a, x) => a + (x - mean) ** 2, 0) / (rounds - 1))
      : 0;
    return {
      ratio: spread(ratios),
      ratios,
      ratioMean: mean,
      ratioStd: std,
      ours: spread(ours),
      torch: spread(theirs),
      oursRates: ours,
      torchRates: theirs,
      cpuRatios: cpu,
      rounds,
    };
  } finally {
    s.dispose();
    await torch.close();
  }
}

/** The PyTorch peer's measurements. */
export interface TorchDitResult {
  steps_per_s: number;
  steps_per_s_min: number;
  steps_per_s_max: number;
  /** Process CPU time per timed step (both threads), less disturbed by other jobs than wall time. */
  cpu_ms_per_step: number;
  loss_first: number;
  loss_last: number;
  threads: number;
  version: string;
  source: string;
  attention: string;
}

/**
 * Steps/s of the same DiT step in PyTorch on the CPU (2 threads), or `null` without PyTorch.
 * The network is tasks/torch/models.py's `DiT` (the one the equivalence fixtures check ours
 * against), so both sides run the same architecture.
 *
 * @example
 * ```ts
 * import { torchDit } from "./dit.ts";
 * const r = await torchDit({ batch: 2, hidden: 16, depth: 1, heads: 2, patch: 4, size: 8, classes: 10, warmup: 0, steps: 1, reps: 1 });
 * if (r !== null && !(r.steps_per_s > 0)) throw new Error("bad");
 * ```
 */
export async function torchDit(cfg: DitBenchConfig): Promise<TorchDitResult | null> {
  const modelsDir = new URL("../../tasks/torch/", import.meta.url).pathname;
  return (await runTorch(TORCH_DIT, {
    ...cfg,
    pool_batches: POOL_BATCHES,
    models_dir: modelsDir,
  })) as TorchDitResult | null;
}

/**
 * The `dit` case: one record.
 *
 * @example
 * ```ts
 * import { ditCase } from "./dit.ts";
 * if (typeof ditCase !== "function") throw new Error("bad");
 * ```
 */
export async function ditCase(ctx: CaseContext): Promise<BenchRecord[]> {
  const cfg: DitBenchConfig = ctx.smoke
    ? { ...DIT_BENCH, batch: 4, hidden: 16, depth: 1, heads: 2, warmup: 1, steps: 1, reps: 1 }
    : DIT_BENCH;
  let torch: TorchDitResult | null = null, torchSkip: string | undefined;
  try {
    torch = await torchDit(cfg);
    if (!torch) torchSkip = "PyTorch is not installed (or python3 is not allowed to run)";
  } catch (e) {
    torchSkip = why(e);
  }
  const ours = await oursDit(cfg);
  if (!Number.isFinite(ours.lossFirst) || !Number.isFinite(ours.lossLast)) {
    throw new Error(`our DiT loss is not finite: ${ours.lossFirst} → ${ours.lossLast}`);
  }
  // tfjs-webgpu, on the same batches (the pool is passed over), with its own step counts.
  const tfjs = await ctx.tfjs();
  const tfCfg = { ...cfg, ...(ctx.smoke ? { warmup: 1, steps: 1, reps: 1 } : TFJS_DIT) };
  let tf: TfjsDitResult | null = null, tfSkip: string | undefined;
  if (!tfjs) tfSkip = "tfjs failed to load";
  else if (tfjs.backend !== "webgpu") tfSkip = "tfjs could not open WebGPU (CPU fallback)";
  else {
    try {
      tf = await tfjsDit(tfCfg, await dataPool(cfg.batch * POOL_BATCHES, cfg.size));
    } catch (e) {
      tfSkip = why(e);
    }
  }
  // The same step on the wasm backend (WebAssembly SIMD on the CPU's cores).
  const wasm = await onWasm(() => oursDit(cfg));
  const w = "value" in wasm ? wasm.value : null;
  // Then wasm and PyTorch alternating (the ratio to quote on a machine whose speed drifts).
  let paired: PairedDitResult | null = null;
  if (torch && w) {
    const p = await onWasm(() => pairedDit(cfg, ctx.smoke ? 1 : PAIRED_ROUNDS));
    if ("value" in p) paired = p.value;
  }
  return [{
    case: "dit",
    batch: cfg.batch,
    adapter: ctx.gpu.info.description,
    ...ourBackend(),
    unit: "steps/s",
    ours: round(ours.rate.median),
    tfjs_webgpu: round(tf?.stepsPerSec),
    torch_cpu: round(torch?.steps_per_s),
    ...spreadFields("ours", ours.rate),
    ...spreadFields("tfjs_webgpu", tf ? { min: tf.stepsPerSecMin, max: tf.stepsPerSecMax } : null),
    ...spreadFields(
      "torch_cpu",
      torch ? { min: torch.steps_per_s_min, max: torch.steps_per_s_max } : null,
    ),
    // Process CPU ms per step: lavapipe's workers run in our process and PyTorch's threads in
    // its own, so on a shared machine these compare the work better than wall-clock rates.
    cpu_ms_per_step: {
      ours: round(ours.cpuMsPerStep),
      ours_wasm: round(w?.cpuMsPerStep),
      tfjs_webgpu: round(tf?.cpuMsPerStep),
      torch_cpu: round(torch?.cpu_ms_per_step),
    },
    ours_wasm: round(w?.rate.median),
    ...spreadFields("ours_wasm", w?.rate ?? null),
    ratio_wasm_vs_torch_cpu: ratio(round(w?.rate.median), round(torch?.steps_per_s)),
    ...(paired
      ? {
        paired_wasm_vs_torch_cpu: round(paired.ratio.median),
        ...spreadFields("paired_wasm_vs_torch_cpu", paired.ratio),
        // Mean ± sample std of the rounds' ratios: a claim of "≥ x times" holds beyond the
        // spread only when mean − std ≥ x (min and max show single disturbed rounds).
        paired_wasm_vs_torch_cpu_mean: round(paired.ratioMean),
        paired_wasm_vs_torch_cpu_std: round(paired.ratioStd),
        paired_ratios: paired.ratios.map((x) => round(x)),
        paired_ours_rounds: paired.oursRates.map((x) => round(x)),
        paired_torch_rounds: paired.torchRates.map((x) => round(x)),
        paired_cpu_ratios: paired.cpuRatios.map((x) => round(x)),
        paired_ours_wasm: round(paired.ours.median),
        paired_torch_cpu: round(paired.torch.median),
        paired_rounds: paired.rounds,
      }
      : {}),
    ...("value" in wasm ? { wasm_device: wasm.device } : { wasm_skipped: wasm.skipped }),
    ...(w ? { wasm_loss: [round(w.lossFirst), round(w.lossLast)] } : {}),
    ratio_vs_tfjs: ratio(round(ours.rate.median), round(tf?.stepsPerSec)),
    ratio_vs_torch_cpu: ratio(round(ours.rate.median), round(torch?.steps_per_s)),
    loss: [round(ours.lossFirst), round(ours.lossLast)],
    ...(tf ? { tfjs_loss: [round(tf.lossFirst), round(tf.lossLast)] } : {}),
    ...(torch ? { torch_loss: [round(torch.loss_first), round(torch.loss_last)] } : {}),
    data: ours.source,
    config: {
      hidden: cfg.hidden,
      depth: cfg.depth,
      heads: cfg.heads,
      patch: cfg.patch,
      tokens: (cfg.size / cfg.patch) ** 2,
      image: [1, cfg.size, cfg.size],
      optimizer: "Adam(1e-4)",
      steps: cfg.steps,
      reps: cfg.reps,
    },
    // tfjs times fewer steps than we do (TFJS_DIT): how many it timed, and its limits.
    ...(tf
      ? {
        tfjs_steps_timed: tf.stepsTimed,
        tfjs_config: {
          warmup: tfCfg.warmup,
          steps: tfCfg.steps,
          reps: tfCfg.reps,
          max_seconds: "maxSeconds" in tfCfg ? tfCfg.maxSeconds : null,
        },
      }
      : {}),
    ...(torch ? { torch_threads: torch.threads, torch_attention: torch.attention } : {}),
    ...(tfSkip ? { tfjs_skipped: tfSkip } : {}),
    ...(torchSkip ? { torch_skipped: torchSkip } : {}),
  }];
}
