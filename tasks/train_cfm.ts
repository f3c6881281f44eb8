/**
 * @file `deno task train:cfm` — conditional flow matching (I-CFM or Lipman's path) with an
 * optional minibatch OT coupling (OT-CFM, seed 003), on the 2-D toys or Fashion-MNIST
 * (class-conditional DiT with label dropout for classifier-free guidance). Writes a run
 * directory: config.json, metrics.jsonl (`training/loss_flow`, `training/grad_norm`,
 * `training/lr`, and `training/ot_marginal_error` with OT), checkpoints (model, EMA,
 * optimizer, step, RNG, config) and `samples/step-N.png`.
 *
 *   deno task train:cfm --dataset moons
 *   deno task train:cfm --dataset 8gaussians --ot            # seed 003's Sinkhorn + argmax
 *   deno task train:cfm --dataset checkerboard --ot exact --max-train-steps 5000
 *   deno task train:cfm --dataset fashion-mnist --model dit-tiny --cfg-dropout 0.1
 *   deno task train:cfm --resume runs/train-cfm-20260101-120000
 *
 * Convention (seeds 001/003): t = 0 noise, t = 1 data, x_t = (1 − t)·x0 + t·x1, target x1 − x0.
 * The loss is read back only every `--log-every` steps; an OT coupling reads its plan back
 * every step by nature (Sinkhorn's error once, then the assignment).
 * @module
 */
import {
  cfmLoss,
  createRun,
  encodePng,
  type FlagSpec,
  gatherRows,
  Generator,
  globalNorm,
  imageGrid,
  loadCheckpoint,
  loadFashionMnist,
  openRun,
  optim,
  otCouple,
  parseFlags,
  Progress,
  type Run,
  sampleToy,
  scatterPanels,
  type Tensor,
  tensor,
  TIME_SCHEDULES,
  valueAndGrad,
} from "../mod.ts";
import { init } from "../mod.ts";
import {
  buildModel,
  CFM_DATASETS,
  CFM_MODELS,
  type CfmDataset,
  type CfmModel,
  generateSamples,
} from "./_train_loop.ts";

/**
 * Valid `--ot` values (bare `--ot` means `argmax`, seed 003's hard assignment).
 *
 * @example
 * ```ts
 * import { OT_METHODS } from "./train_cfm.ts";
 * console.log(OT_METHODS.join("|")); // none|argmax|sample|exact
 * ```
 */
export const OT_METHODS = ["none", "argmax", "sample", "exact"] as const;

/** The resolved configuration of a run (written to config.json and every checkpoint). */
export interface TrainCfmConfig {
  task: "train:cfm";
  dataset: CfmDataset;
  dataShape: number[];
  numClasses: number;
  ot: typeof OT_METHODS[number];
  otReg: number;
  otIters: number;
  sigmaMin: number;
  variant: "icfm" | "lipman";
  timeSampling: "uniform" | "logit-normal";
  timeMean: number;
  timeStd: number;
  model: CfmModel;
  hidden: number;
  depth: number;
  cfgDropout: number;
  batchSize: number;
  lr: number;
  maxTrainSteps: number;
  emaDecay: number;
  gradClip: number;
  seed: number;
  outputDir: string;
  expName: string | null;
  checkpointEvery: number;
  sampleEvery: number;
  sampleSteps: number;
  logEvery: number;
  resume: string | null;
}

/**
 * The flags (kebab-case; snake_case spellings such as `--ot_reg` work too).
 *
 * @example
 * ```ts
 * import { TRAIN_CFM_FLAGS } from "./train_cfm.ts";
 * console.log(TRAIN_CFM_FLAGS.map((f) => f.name).includes("ot-reg")); // true
 * ```
 */
export const TRAIN_CFM_FLAGS = [
  { name: "dataset", type: "choice", choices: CFM_DATASETS, default: "8gaussians", help: "data" },
  {
    name: "ot",
    type: "choice",
    choices: OT_METHODS,
    default: "none",
    help: "minibatch OT coupling; bare --ot = argmax (seed 003)",
  },
  {
    name: "ot-reg",
    type: "number",
    default: 0.05,
    min: 0,
    help: "Sinkhorn entropic reg (cost divided by its max)",
  },
  {
    name: "ot-iters",
    type: "int",
    default: 50,
    min: 1,
    aliases: ["ot-iterations"],
    help: "Sinkhorn iterations",
  },
  {
    name: "sigma-min",
    type: "number",
    min: 0,
    help: "path width (default 0 for icfm, 1e-5 for lipman)",
  },
  {
    name: "variant",
    type: "choice",
    choices: ["icfm", "lipman"],
    default: "icfm",
    help: "probability path",
  },
  {
    name: "time-sampling",
    type: "choice",
    choices: TIME_SCHEDULES,
    default: "uniform",
    help: "training-time distribution",
  },
  { name: "time-mean", type: "number", default: 0, help: "logit-normal mean" },
  { name: "time-std", type: "number", default: 1, min: 0, help: "logit-normal std" },
  {
    name: "model",
    type: "choice",
    choices: CFM_MODELS,
    help: "network (default velocity-mlp for 2-D, dit-tiny for images)",
  },
  { name: "hidden", type: "int", min: 4, help: "width (default 128 MLP, 64 DiT)" },
  { name: "depth", type: "int", min: 1, help: "layers/blocks (default 3 MLP, 4 DiT)" },
  {
    name: "cfg-dropout",
    type: "number",
    min: 0,
    max: 1,
    help: "label dropout for CFG (default 0.1 on labelled data)",
  },
  { name: "batch-size", type: "int", default: 256, min: 1, help: "batch size" },
  {
    name: "lr",
    type: "number",
    default: 1e-3,
    min: 0,
    aliases: ["learning-rate"],
    help: "Adam learning rate",
  },
  { name: "max-train-steps", type: "int", default: 2000, min: 1, help: "optimizer steps" },
  { name: "ema-decay", type: "number", default: 0.999, min: 0, max: 1, help: "EMA decay" },
  {
    name: "grad-clip",
    type: "number",
    default: 1,
    min: 0,
    aliases: ["max-grad-norm"],
    help: "clip the global grad norm (0: off)",
  },
  { name: "seed", type: "int", default: 0, min: 0, help: "random seed" },
  { name: "output-dir", type: "string", default: "runs", help: "parent of the run directory" },
  { name: "exp-name", type: "string", help: "run directory name (default train-cfm-<time>)" },
  {
    name: "checkpoint-every",
    type: "int",
    default: 1000,
    min: 1,
    help: "steps between checkpoints",
  },
  {
    name: "sample-every",
    type: "int",
    default: 0,
    min: 0,
    help: "steps between sample images (0: at the end only)",
  },
  { name: "sample-steps", type: "int", default: 50, min: 1, help: "midpoint steps for samples" },
  { name: "log-every", type: "int", default: 100, min: 1, help: "steps between metric lines" },
  { name: "resume", type: "string", help: "a run directory or checkpoint to continue" },
] as const satisfies readonly FlagSpec[];

const ABOUT = "Train a flow-matching velocity model (CFM / OT-CFM) on a 2-D toy or " +
  "Fashion-MNIST. Time convention: t = 0 noise, t = 1 data.";

/** Bare `--ot` (no value, or followed by another flag) means `--ot argmax`. */
function expandBareOt(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    const next = argv[i + 1];
    if (tok === "--ot" && (next === undefined || next.startsWith("--"))) out.push("--ot=argmax");
    else out.push(tok);
  }
  return out;
}

/**
 * Parse and validate the flags (before anything is written). Returns `null` for `--help`.
 * Dataset-dependent values (shape, classes) are filled in by {@linkcode main}.
 *
 * @example
 * ```ts
 * import { parseTrainCfmFlags } from "./train_cfm.ts";
 * const c = parseTrainCfmFlags(["--dataset", "moons", "--ot"])!;
 * console.log(c.ot, c.model, c.hidden); // argmax velocity-mlp 128
 * ```
 */
export function parseTrainCfmFlags(argv: readonly string[]): TrainCfmConfig | null {
  let help = false;
  const f = parseFlags(expandBareOt(argv), TRAIN_CFM_FLAGS, {
    task: "train:cfm",
    usage: ABOUT,
    onHelp: (text) => {
      console.log(text);
      help = true;
    },
  });
  if (help) return null;
  const images = f.dataset === "fashion-mnist";
  const model: CfmModel = f.model ?? (images ? "dit-tiny" : "velocity-mlp");
  if (images && model === "velocity-mlp") {
    throw new RangeError(
      `--model velocity-mlp is for the 2-D toys; --dataset fashion-mnist uses --model dit-tiny`,
    );
  }
  if (!images && model === "dit-tiny") {
    throw new RangeError(`--model dit-tiny needs images; use it with --dataset fashion-mnist`);
  }
  if (f.ot !== "none" && f.otReg <= 0) {
    throw new RangeError(`Expected --ot-reg to be a number > 0 but found ${f.otReg}`);
  }
  if (f.variant === "lipman" && f.sigmaMin !== undefined && f.sigmaMin > 1) {
    throw new RangeError(
      `Expected --sigma-min in [0, 1] for --variant lipman but found ${f.sigmaMin}`,
    );
  }
  const dit = model === "dit-tiny";
  const hidden = f.hidden ?? (dit ? 64 : 128);
  if (dit && hidden % 4 !== 0) {
    throw new RangeError(
      `Expected --hidden to be a multiple of 4 for dit-tiny but found ${hidden}`,
    );
  }
  return {
    task: "train:cfm",
    dataset: f.dataset,
    dataShape: images ? [1, 28, 28] : [2],
    numClasses: images ? 10 : 0,
    ot: f.ot,
    otReg: f.otReg,
    otIters: f.otIters,
    sigmaMin: f.sigmaMin ?? (f.variant === "lipman" ? 1e-5 : 0),
    variant: f.variant,
    timeSampling: f.timeSampling,
    timeMean: f.timeMean,
    timeStd: f.timeStd,
    model,
    hidden,
    depth: f.depth ?? (dit ? 4 : 3),
    cfgDropout: f.cfgDropout ?? (images ? 0.1 : 0),
    batchSize: f.batchSize,
    lr: f.lr,
    maxTrainSteps: f.maxTrainSteps,
    emaDecay: f.emaDecay,
    gradClip: f.gradClip,
    seed: f.seed,
    outputDir: f.outputDir,
    expName: f.expName ?? null,
    checkpointEvery: f.checkpointEvery,
    sampleEvery: f.sampleEvery,
    sampleSteps: f.sampleSteps,
    logEvery: f.logEvery,
    resume: f.resume ?? null,
  };
}

/** What `main` returns. */
export interface TrainCfmResult {
  /** The run directory. */
  runDir: string;
  /** The last checkpoint written. */
  checkpoint: string;
  /** metrics.jsonl. */
  metrics: string;
  /** The final sample image. */
  samplePlot: string;
  /** Steps done. */
  steps: number;
  /** Mean loss over the last logging window. */
  finalLoss: number;
}

/** Training data: a batch source on the host. */
interface DataSource {
  /** A batch x1 [B, ...shape] (and labels [B] for labelled data), drawn from `gen`. */
  batch(b: number, gen: Generator): { x1: Tensor; y?: Tensor };
  /** A fixed reference batch for plots (host values and labels). */
  reference(n: number): Promise<{ x: Float32Array; labels?: number[] }>;
}

async function dataSource(cfg: TrainCfmConfig): Promise<DataSource> {
  if (cfg.dataset !== "fashion-mnist") {
    const name = cfg.dataset;
    return {
      batch: (b, gen) => ({ x1: sampleToy(name, b, gen) }),
      reference: async (n) => {
        const t = sampleToy(name, n, new Generator(cfg.seed + 7919));
        const x = await t.data();
        t.dispose();
        return { x };
      },
    };
  }
  const ds = await loadFashionMnist();
  const row = ds.shape.reduce((a, b) => a * b, 1);
  return {
    batch: (b, gen) => {
      const u = gen.uniformHost(b);
      const idx = Array.from(u, (v) => Math.min(ds.n - 1, Math.floor(v * ds.n)));
      return {
        x1: tensor(gatherRows(ds.images, row, idx), [b, ...ds.shape]),
        y: tensor(Float32Array.from(idx, (i) => ds.labels[i]!)),
      };
    },
    reference: (n) => {
      const idx = Array.from({ length: n }, (_, i) => i);
      return Promise.resolve({
        x: gatherRows(ds.images, row, idx),
        labels: idx.map((i) => ds.labels[i]!),
      });
    },
  };
}

/**
 * Run the task with command-line arguments; returns the run's paths (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { main } from "./train_cfm.ts";
 * console.log(await main(["--help"])); // prints the usage, then null
 * ```
 */
export async function main(argv: readonly string[]): Promise<TrainCfmResult | null> {
  await init();
  let cfg = parseTrainCfmFlags(argv);
  if (!cfg) return null;
  let run: Run;
  let resumeFrom: string | null = null;
  if (cfg.resume) {
    let dir = cfg.resume.replace(/\/+$/, "");
    if (dir.endsWith(".safetensors")) {
      resumeFrom = dir;
      dir = dir.replace(/\/?checkpoints\/[^/]+$/, "") || ".";
    }
    run = await openRun(dir);
    const stored = run.config as TrainCfmConfig;
    if (stored?.task !== "train:cfm") {
      throw new RangeError(`--resume ${cfg.resume}: ${dir} is not a train:cfm run directory`);
    }
    // The stored config wins, except for the step budget and the output cadence given
    // explicitly now (a re-parse without defaults tells which flags were given).
    const given = parseFlags(
      expandBareOt(argv),
      (TRAIN_CFM_FLAGS as readonly FlagSpec[]).map((f) => ({ ...f, default: undefined })),
      { task: "train:cfm" },
    ) as Record<string, unknown>;
    const kept = ["maxTrainSteps", "checkpointEvery", "sampleEvery", "logEvery", "resume", "_"];
    const ignored = Object.keys(given).filter((k) => given[k] !== undefined && !kept.includes(k))
      .filter((k) => !(typeof given[k] === "boolean" && given[k] === false));
    if (ignored.length) {
      console.warn(
        `train:cfm: --resume keeps the run's config.json; ignoring ${
          ignored.map((k) => `--${k.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)}`).join(", ")
        }`,
      );
    }
    const pick = <K extends "maxTrainSteps" | "checkpointEvery" | "sampleEvery" | "logEvery">(
      k: K,
    ): number => (given[k] === undefined ? stored[k] : cfg![k]);
    cfg = {
      ...stored,
      maxTrainSteps: pick("maxTrainSteps"),
      checkpointEvery: pick("checkpointEvery"),
      sampleEvery: pick("sampleEvery"),
      logEvery: pick("logEvery"),
      resume: cfg.resume,
    };
  }
  const c = cfg;
  const data = await dataSource(c);
  if (!c.resume) {
    run = await createRun("train:cfm", {
      outputDir: c.outputDir,
      expName: c.expName ?? undefined,
      config: c,
    });
  }
  run = run!;

  const model = buildModel(c);
  const params = model.parameters();
  const names = [...model.namedParameters().keys()];
  const opt = new optim.Adam({ lr: c.lr });
  const ema = new optim.EMA(model, { decay: c.emaDecay });
  let gen = new Generator(c.seed);
  let step = 0;
  if (c.resume) {
    const found = resumeFrom
      ? { path: resumeFrom, checkpoint: await loadCheckpoint(resumeFrom) }
      : await run.checkpoints.latest();
    if (!found) throw new RangeError(`--resume ${c.resume}: no valid checkpoint found`);
    const ck = found.checkpoint;
    model.loadStateDict(ck.model);
    if (ck.ema) {
      ema.loadStateDict({ numUpdates: Number(ck.extra?.emaUpdates ?? 0), tensors: ck.ema });
    }
    if (ck.optimizer) {
      opt.loadStateDict(
        { step: Number(ck.extra?.optimizerStep ?? 0), tensors: ck.optimizer },
        params,
      );
    }
    if (!ck.rng) throw new RangeError(`--resume ${found.path}: the checkpoint has no RNG state`);
    gen = Generator.fromState(ck.rng);
    step = ck.step;
    console.error(`train:cfm: resumed ${found.path} at step ${step}`);
  }
  // Label dropout draws from the training stream, so a resumed run repeats it exactly.
  if (model.yEmbedder) model.yEmbedder.dropGenerator = gen;
  model.train(true);

  const saveCkpt = async () => {
    const st = opt.stateDict();
    const es = ema.stateDict();
    return await run.checkpoints.save(step, {
      model: model.stateDict(),
      ema: Object.fromEntries(names.map((n, i) => [n, es.tensors[`shadow.${i}`]!])),
      optimizer: st.tensors,
      rng: gen.state(),
      config: c,
      extra: { optimizerStep: st.step, emaUpdates: es.numUpdates },
    });
  };

  const writeSamples = async (): Promise<string> => {
    model.eval();
    ema.swapInto(model);
    try {
      const rel = `samples/step-${String(step).padStart(6, "0")}.png`;
      if (c.dataset === "fashion-mnist") {
        const per = 8, C = c.numClasses;
        const labels = Float32Array.from({ length: C * per }, (_, i) => Math.floor(i / per));
        const g = await generateSamples(model, c.dataShape, {
          n: labels.length,
          sampler: "midpoint",
          steps: c.sampleSteps,
          seed: c.seed + 4242,
          labels,
          batch: 40,
        });
        const [ch, h, w] = c.dataShape as [number, number, number];
        const grid = imageGrid(g.x, {
          n: labels.length,
          channels: ch,
          height: h,
          width: w,
          nrow: per,
        });
        return await run.writeFile(rel, await encodePng(grid.width, grid.height, grid.rgba));
      }
      const n = 1000;
      const g = await generateSamples(model, c.dataShape, {
        n,
        sampler: "midpoint",
        steps: c.sampleSteps,
        seed: c.seed + 4242,
      });
      const ref = await data.reference(n);
      const png = await scatterPanels([
        { points: ref.x, title: `data (${c.dataset})` },
        { points: g.x, title: `samples (ot ${c.ot}, step ${step})` },
      ]);
      return await run.writeFile(rel, png);
    } finally {
      ema.swapInto(model);
      model.train(true);
    }
  };

  let cur: { x1: Tensor; y?: Tensor; coupling?: { x0: Tensor; x1: Tensor; labels?: Tensor } };
  const velocity = (x: Tensor, t: Tensor, y?: Tensor) => model.forward(x, t, y);
  const vg = valueAndGrad((_p: Tensor[]) =>
    cfmLoss(velocity, cur.x1, {
      y: cur.y,
      coupling: cur.coupling,
      generator: gen,
      sigmaMin: c.sigmaMin,
      variant: c.variant,
      timeSchedule: c.timeSampling,
      timeOptions: { mean: c.timeMean, std: c.timeStd },
    }).loss
  );

  const progress = new Progress(c.maxTrainSteps, { label: "train:cfm" });
  let lossAcc: Tensor | null = null, normAcc: Tensor | null = null, accN = 0;
  let otErrAcc = 0;
  let lastLoss = NaN;
  let ckptPath = run.checkpoints.lastPath;
  let samplePlot = "";
  while (step < c.maxTrainSteps) {
    const { x1, y } = data.batch(c.batchSize, gen);
    let coupling: typeof cur.coupling;
    if (c.ot !== "none") {
      const x0 = gen.normal(x1.shape);
      // The one readback per step OT needs: Sinkhorn's error once (checkEvery = iters) and
      // the assignment; the Hungarian `exact` coupling reads the cost matrix instead.
      const cp = await otCouple(x0, x1, {
        method: c.ot,
        reg: c.otReg,
        maxIters: c.otIters,
        checkEvery: c.otIters,
        labels: y,
        generator: gen,
      });
      x0.dispose();
      coupling = cp;
      otErrAcc += cp.marginalError;
    }
    cur = { x1, y, coupling };
    const [loss, grads] = vg(params);
    let norm: Tensor;
    if (c.gradClip > 0) {
      const clipped = optim.clipGradNorm(grads, c.gradClip);
      opt.step(params, clipped.grads);
      clipped.grads.forEach((g) => g.dispose());
      norm = clipped.norm;
    } else {
      opt.step(params, grads);
      norm = globalNorm(grads);
    }
    grads.forEach((g) => g.dispose());
    ema.update(model);
    x1.dispose();
    y?.dispose();
    if (coupling) {
      coupling.x0.dispose();
      coupling.x1.dispose();
      coupling.labels?.dispose();
    }
    step++;
    const nl: Tensor = lossAcc === null ? loss.add(0) : lossAcc.add(loss);
    const nn_: Tensor = normAcc === null ? norm.add(0) : normAcc.add(norm);
    lossAcc?.dispose();
    normAcc?.dispose();
    loss.dispose();
    norm.dispose();
    [lossAcc, normAcc] = [nl, nn_];
    accN++;
    if (step % c.logEvery === 0 || step === c.maxTrainSteps) {
      const l = (await nl.item()) / accN, gn = (await nn_.item()) / accN;
      nl.dispose();
      nn_.dispose();
      lossAcc = normAcc = null;
      const rec: Record<string, number> = {
        "training/loss_flow": l,
        "training/grad_norm": gn,
        "training/lr": opt.lr,
      };
      if (c.ot !== "none") rec["training/ot_marginal_error"] = otErrAcc / accN;
      accN = 0;
      otErrAcc = 0;
      lastLoss = l;
      await run.logMetrics(step, rec);
      progress.update(step, { loss: l });
    }
    if (step % c.checkpointEvery === 0 || step === c.maxTrainSteps) ckptPath = await saveCkpt();
    if (c.sampleEvery > 0 && step % c.sampleEvery === 0 && step !== c.maxTrainSteps) {
      samplePlot = await writeSamples();
    }
  }
  lossAcc?.dispose();
  normAcc?.dispose();
  progress.done();
  samplePlot = await writeSamples();
  model.dispose();
  opt.dispose();
  ema.dispose();
  console.log(`run:          ${run.dir}`);
  console.log(`checkpoint:   ${ckptPath}`);
  console.log(`metrics:      ${run.metricsPath}`);
  console.log(`samples:      ${samplePlot}`);
  return {
    runDir: run.dir,
    checkpoint: ckptPath,
    metrics: run.metricsPath,
    samplePlot,
    steps: step,
    finalLoss: lastLoss,
  };
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    if (e instanceof RangeError || e instanceof TypeError) {
      console.error(`train:cfm: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
