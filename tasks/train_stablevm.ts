/**
 * @file `deno task train:stablevm` — train a class-conditional velocity model with Stable
 * Velocity Matching (`--loss-type stablevm`) or plain CFM (`--loss-type si`), after SV's
 * train.py. With no flags it trains the AdaLN-Zero MLP on an embedded class-conditional
 * Gaussian mixture (the 8-mode 2-D ring: the components are the classes), writes a run
 * directory (config.json, metrics.jsonl, checkpoints, a sample scatter plot) and prints the
 * final Fisher divergence against the exact class-conditional field.
 *
 *   deno task train:stablevm
 *   deno task train:stablevm --loss-type si --max-train-steps 5000
 *   deno task train:stablevm --data-dir my.npz --bank-capacity-per-class 64
 *   deno task train:stablevm --resume runs/train-stablevm-20260101-120000
 * @module
 */
import {
  fisherDivergence,
  GaussianMixture,
  Generator,
  integrate,
  MemoryBank,
  nn,
  optim,
  PROJ_WEIGHT_SCHEDULES,
  siLoss,
  stableVmLoss,
  type Tensor,
  tensor,
  valueAndGrad,
} from "../mod.ts";
import { init } from "../mod.ts";
import {
  createRun,
  type FlagSpec,
  loadCheckpoint,
  loadNpz,
  openRun,
  parseFlags,
  Progress,
  type Run,
  scatterPanels,
} from "../mod.ts";
import { checkChoice } from "../lib/_util.ts";

/** Valid `--loss-type` values (SV: "si" = CFM, "stablevm"). */
export const LOSS_TYPES = ["si", "stablevm"] as const;
/** Valid `--model` values here; SV's SiT models need the image stack. */
export const MODELS = ["adaln-mlp"] as const;

/** The resolved configuration of a run (written to config.json). */
export interface TrainStableVmConfig {
  lossType: typeof LOSS_TYPES[number];
  bankCapacityPerClass: number;
  prefillBankFully: boolean;
  efficient: boolean;
  pathType: "linear";
  prediction: "v";
  weighting: "uniform";
  maxTrainSteps: number;
  batchSize: number;
  learningRate: number;
  maxGradNorm: number;
  seed: number;
  outputDir: string;
  expName: string | null;
  dataDir: string | null;
  model: typeof MODELS[number];
  hidden: number;
  blocks: number;
  dropout: number;
  projWeightSchedule: typeof PROJ_WEIGHT_SCHEDULES[number];
  projTau: number;
  projK: number;
  projCoeff: number;
  useProjLoss: boolean;
  emaDecay: number;
  checkpointEvery: number;
  logEvery: number;
  resume: string | null;
  sampleSteps: number;
  fisherSamples: number;
}

/** The flags (kebab-case; the seed's snake_case and dotted spellings are accepted too). */
export const TRAIN_STABLEVM_FLAGS = [
  {
    name: "loss-type",
    type: "choice",
    choices: LOSS_TYPES,
    default: "stablevm",
    help: "CFM (si) or StableVM",
  },
  {
    name: "bank-capacity-per-class",
    type: "int",
    default: 256,
    min: 1,
    help: "StableVM bank entries per class",
  },
  {
    name: "prefill-bank-fully",
    type: "bool",
    help: "fill every class ring before training (else >= 1 each)",
  },
  { name: "efficient", type: "bool", help: "chunked bank pass (stable_vm_efficient)" },
  {
    name: "path-type",
    type: "string",
    default: "linear",
    help: "interpolation path (only linear)",
  },
  { name: "prediction", type: "string", default: "v", help: "model prediction (only v)" },
  { name: "weighting", type: "string", default: "uniform", help: "time weighting (only uniform)" },
  { name: "max-train-steps", type: "int", default: 1500, min: 1, help: "optimizer steps" },
  { name: "batch-size", type: "int", default: 256, min: 1, help: "batch size" },
  {
    name: "learning-rate",
    type: "number",
    default: 1e-3,
    min: 0,
    aliases: ["lr"],
    help: "Adam learning rate",
  },
  { name: "max-grad-norm", type: "number", default: 1, min: 0, help: "gradient clipping norm" },
  { name: "seed", type: "int", default: 0, min: 0, help: "random seed" },
  { name: "output-dir", type: "string", default: "runs", help: "parent of the run directory" },
  { name: "exp-name", type: "string", help: "run directory name (default train-stablevm-<time>)" },
  {
    name: "data-dir",
    type: "string",
    help: ".npz (or a directory with data.npz) holding x and labels",
  },
  {
    name: "model",
    type: "string",
    default: "adaln-mlp",
    help: "adaln-mlp (SiT models need the image stack)",
  },
  { name: "hidden", type: "int", default: 32, min: 1, help: "MLP width" },
  { name: "blocks", type: "int", default: 4, min: 1, help: "MLP blocks" },
  { name: "dropout", type: "number", default: 0.1, min: 0, max: 1, help: "dropout" },
  {
    name: "proj-weight-schedule",
    type: "choice",
    choices: PROJ_WEIGHT_SCHEDULES,
    default: "hard",
    help: "VA-REPA schedule",
  },
  { name: "proj-tau", type: "number", default: 0.7, help: "VA-REPA split point in (0, 1)" },
  { name: "proj-k", type: "number", default: 20, help: "VA-REPA sigmoid sharpness" },
  { name: "proj-coeff", type: "number", default: 0.5, min: 0, help: "projection-loss coefficient" },
  {
    name: "use-proj-loss",
    type: "bool",
    help: "accepted; needs an image encoder (ignored by the MLP)",
  },
  { name: "ema-decay", type: "number", default: 0.999, min: 0, max: 1, help: "EMA decay" },
  {
    name: "checkpoint-every",
    type: "int",
    default: 500,
    min: 1,
    help: "steps between checkpoints",
  },
  { name: "log-every", type: "int", default: 50, min: 1, help: "steps between metric lines" },
  { name: "resume", type: "string", help: "a run directory (or a checkpoint in one) to continue" },
  { name: "sample-steps", type: "int", default: 50, min: 1, help: "ODE steps for the sample plot" },
  {
    name: "fisher-samples",
    type: "int",
    default: 4096,
    min: 1,
    help: "samples per time for the Fisher divergence",
  },
  // Accepted for pasted SV commands; they mean nothing on this engine.
  { name: "report-to", type: "string", help: "ignored (wandb)" },
  { name: "allow-tf32", type: "bool", help: "ignored" },
  { name: "mixed-precision", type: "string", help: "ignored (f32 only)" },
] as const satisfies readonly FlagSpec[];

const ABOUT = "Train a class-conditional velocity model with Stable Velocity Matching or CFM. " +
  "With no flags: the AdaLN-Zero MLP on an embedded 8-class 2-D Gaussian mixture, a few minutes on a CPU adapter.";

/**
 * Parse and validate the flags (everything is checked before any training starts).
 * Returns `null` for `--help` (after printing the usage).
 *
 * @example
 * ```ts
 * import { parseTrainFlags } from "./train_stablevm.ts";
 * const cfg = parseTrainFlags(["--loss_type=si", "--bank-capacity-per-class", "64"]);
 * console.log(cfg?.lossType, cfg?.bankCapacityPerClass); // si 64
 * ```
 */
export function parseTrainFlags(argv: readonly string[]): TrainStableVmConfig | null {
  let help = false;
  const f = parseFlags(argv, TRAIN_STABLEVM_FLAGS, {
    task: "train:stablevm",
    usage: ABOUT,
    onHelp: (text) => {
      console.log(text);
      help = true;
    },
  });
  if (help) return null;
  if (/^(SiT|DiT)-/i.test(f.model)) {
    throw new RangeError(
      `--model ${f.model}: image models (SiT/DiT) arrive later with the image training stack; ` +
        `this task trains the toy "adaln-mlp" model`,
    );
  }
  if (!(f.projTau > 0 && f.projTau < 1)) {
    throw new RangeError(`Expected --proj-tau to be a number in (0, 1) but found ${f.projTau}`);
  }
  return {
    lossType: f.lossType,
    bankCapacityPerClass: f.bankCapacityPerClass,
    prefillBankFully: f.prefillBankFully,
    efficient: f.efficient,
    pathType: checkChoice("--path-type", f.pathType, ["linear"] as const),
    prediction: checkChoice("--prediction", f.prediction, ["v"] as const),
    weighting: checkChoice("--weighting", f.weighting, ["uniform"] as const),
    maxTrainSteps: f.maxTrainSteps,
    batchSize: f.batchSize,
    learningRate: f.learningRate,
    maxGradNorm: f.maxGradNorm,
    seed: f.seed,
    outputDir: f.outputDir,
    expName: f.expName ?? null,
    dataDir: f.dataDir ?? null,
    model: checkChoice("--model", f.model, MODELS),
    hidden: f.hidden,
    blocks: f.blocks,
    dropout: f.dropout,
    projWeightSchedule: f.projWeightSchedule,
    projTau: f.projTau,
    projK: f.projK,
    projCoeff: f.projCoeff,
    useProjLoss: f.useProjLoss,
    emaDecay: f.emaDecay,
    checkpointEvery: f.checkpointEvery,
    logEvery: f.logEvery,
    resume: f.resume ?? null,
    sampleSteps: f.sampleSteps,
    fisherSamples: f.fisherSamples,
  };
}

/** A class-labelled dataset on the host. */
interface Dataset {
  x: Float32Array;
  labels: Int32Array;
  n: number;
  dim: number;
  numClasses: number;
  /** The exact mixture when the data are the embedded one (for the Fisher divergence). */
  gmm: GaussianMixture | null;
}

const EMBEDDED_SIZE = 8192;

/** The embedded default: 8192 samples of the 8-mode 2-D ring (radius 2, variance 0.02). */
function embeddedDataset(seed: number): Dataset {
  const gmm = GaussianMixture.ring({ numModes: 8 });
  const { x, labels } = gmm.sampleHost(EMBEDDED_SIZE, new Generator(seed + 7919));
  return { x, labels, n: EMBEDDED_SIZE, dim: 2, numClasses: 8, gmm };
}

async function loadDataset(path: string): Promise<Dataset> {
  let file = path;
  try {
    if ((await Deno.stat(path)).isDirectory) file = `${path}/data.npz`;
  } catch {
    throw new RangeError(`--data-dir ${path} does not exist`);
  }
  const arrays = await loadNpz(file);
  if (!arrays.x) throw new RangeError(`--data-dir ${file}: expected an array named "x"`);
  if (!arrays.labels) {
    throw new RangeError(
      `--data-dir ${file} has no "labels" array: the class-conditional objective needs one ` +
        `integer label per row of x`,
    );
  }
  const xs = arrays.x, ls = arrays.labels;
  const n = xs.shape[0] ?? 0;
  if (n < 1 || ls.shape.length !== 1 || ls.shape[0] !== n) {
    throw new RangeError(
      `--data-dir ${file}: expected x [n, ...] and labels [n] but found [${xs.shape.join(", ")}] ` +
        `and [${ls.shape.join(", ")}]`,
    );
  }
  const dim = xs.shape.slice(1).reduce((a, b) => a * b, 1);
  const x = Float32Array.from(xs.data as ArrayLike<number>);
  const labels = Int32Array.from(ls.data as ArrayLike<number>, Number);
  let C = 0;
  labels.forEach((l, i) => {
    if (!Number.isInteger(l) || l < 0) {
      throw new RangeError(`--data-dir ${file}: label ${i} is ${l}; expected integers >= 0`);
    }
    C = Math.max(C, l + 1);
  });
  return { x, labels, n, dim, numClasses: C, gmm: null };
}

/** What `main` returns (paths and the final numbers). */
export interface TrainStableVmResult {
  runDir: string;
  checkpoint: string;
  metrics: string;
  samplePlot: string;
  steps: number;
  finalLoss: number;
  /** Mean Fisher divergence of the EMA model against the exact class-conditional field. */
  fisher: number | null;
}

function b64(a: Float32Array | Int32Array): string {
  const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let s = "";
  for (let i = 0; i < u.length; i += 0x8000) {
    s += String.fromCharCode(...u.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
function unb64(s: string): Uint8Array {
  const bin = atob(s);
  const u = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
  return u;
}

/**
 * Run the task with command-line arguments; returns the run's paths and final numbers
 * (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { main } from "./train_stablevm.ts";
 * await main(["--help"]); // prints the flags; a real run: main(["--max-train-steps", "200"])
 * ```
 */
export async function main(argv: readonly string[]): Promise<TrainStableVmResult | null> {
  await init();
  let cfg = parseTrainFlags(argv);
  if (!cfg) return null;
  if (cfg.useProjLoss) {
    console.warn(
      "train:stablevm: --use-proj-loss needs an image encoder (DINOv2 features) and image " +
        "models; it is accepted for compatibility and ignored by the toy MLP.",
    );
  }
  // Resume: the stored config wins, except for the step budget and output cadence.
  let run: Run;
  let resumeFrom: string | null = null;
  if (cfg.resume) {
    let dir = cfg.resume;
    if (dir.endsWith(".safetensors")) {
      resumeFrom = dir;
      dir = dir.replace(/\/checkpoints\/[^/]+$/, "");
    }
    run = await openRun(dir);
    const stored = run.config as TrainStableVmConfig;
    cfg = {
      ...stored,
      maxTrainSteps: cfg.maxTrainSteps,
      checkpointEvery: cfg.checkpointEvery,
      logEvery: cfg.logEvery,
      resume: cfg.resume,
    };
  }
  const data = cfg.dataDir ? await loadDataset(cfg.dataDir) : embeddedDataset(cfg.seed);
  if (!cfg.resume) {
    run = await createRun("train:stablevm", {
      outputDir: cfg.outputDir,
      expName: cfg.expName ?? undefined,
      config: { ...cfg, dataset: cfg.dataDir ?? "embedded:ring8-2d", numClasses: data.numClasses },
    });
  }
  run = run!;
  const C = data.numClasses, d = data.dim;

  const gen = new Generator(cfg.seed);
  const model = new nn.AdaLNMLP({
    dim: d,
    hidden: cfg.hidden,
    blocks: cfg.blocks,
    dropout: cfg.dropout,
    numClasses: C,
    classDropoutProb: 0.1,
    seed: cfg.seed + 1,
  });
  // The loss already replaces 10% of labels by the null label (and draws those samples from
  // the global pool), so the embedder must not drop labels a second time: keep it in eval
  // mode; its table still has the null row.
  const setTrain = (on: boolean) => {
    model.train(on);
    model.yEmbedder?.eval();
  };
  setTrain(true);
  const params = model.parameters();
  const names = [...model.namedParameters().keys()];
  const opt = new optim.Adam({ lr: cfg.learningRate });
  const ema = new optim.EMA(model, { decay: cfg.emaDecay });
  const bank = new MemoryBank({
    numClasses: C,
    capacityPerClass: cfg.bankCapacityPerClass,
    dim: d,
  });

  let step = 0;
  let trainGen = gen;
  if (cfg.resume) {
    const found = resumeFrom
      ? {
        path: resumeFrom,
        checkpoint: await loadCheckpoint(resumeFrom),
      }
      : await run.checkpoints.latest();
    if (!found) throw new RangeError(`--resume ${cfg.resume}: no valid checkpoint found`);
    const ck = found.checkpoint;
    model.loadStateDict(ck.model);
    if (ck.ema) {
      ema.loadStateDict({
        numUpdates: Number(ck.extra?.emaUpdates ?? 0),
        tensors: Object.fromEntries(names.map((n, i) => [`shadow.${i}`, ck.ema![n]!])),
      });
    }
    if (ck.optimizer) {
      opt.loadStateDict({ step: Number(ck.extra?.optimizerStep ?? 0), tensors: ck.optimizer });
    }
    if (ck.rng) trainGen = Generator.fromState(ck.rng);
    const bs = ck.extra?.bank as { data: string; counts: string; heads: string } | undefined;
    if (bs) {
      bank.loadState({
        data: new Float32Array(unb64(bs.data).buffer),
        counts: new Int32Array(unb64(bs.counts).buffer),
        heads: new Int32Array(unb64(bs.heads).buffer),
      });
    }
    step = ck.step;
    console.error(`train:stablevm: resumed ${found.path} at step ${step}`);
  } else {
    bank.prefill({ x: data.x, labels: data.labels }, {
      fully: cfg.prefillBankFully,
      generator: gen,
    });
  }

  const saveCkpt = async () => {
    const st = opt.stateDict();
    const emaSt = ema.stateDict();
    const bst = bank.state();
    return await run.checkpoints.save(step, {
      model: model.stateDict(),
      ema: Object.fromEntries(names.map((n, i) => [n, emaSt.tensors[`shadow.${i}`]!])),
      optimizer: st.tensors,
      rng: trainGen.state(),
      config: run.config,
      extra: {
        optimizerStep: st.step,
        emaUpdates: emaSt.numUpdates,
        bank: { data: b64(bst.data), counts: b64(bst.counts), heads: b64(bst.heads) },
      },
    });
  };

  const field = (x: Tensor, t: Tensor, y: Tensor) => model.forward(x, t, y);
  const lossOf = () => {
    const o = { bank, batchSize: cfg!.batchSize, generator: trainGen, efficient: cfg!.efficient };
    return (cfg!.lossType === "stablevm" ? stableVmLoss(field, o) : siLoss(field, o)).loss;
  };
  const vg = valueAndGrad((_p: Tensor[]) => lossOf());

  const progress = new Progress(cfg.maxTrainSteps, { label: "train:stablevm", startStep: step });
  let lossAcc: Tensor | null = null, normAcc: Tensor | null = null, accN = 0;
  let lastLoss = NaN;
  let ckptPath = run.checkpoints.lastPath;
  while (step < cfg.maxTrainSteps) {
    // SV: the dataloader batch only refills the bank; the loss draws from the bank.
    const idx = trainGen.uniformHost(cfg.batchSize);
    const bx = new Float32Array(cfg.batchSize * d), bl = new Int32Array(cfg.batchSize);
    idx.forEach((u, i) => {
      const j = Math.min(data.n - 1, Math.floor(u * data.n));
      bx.set(data.x.subarray(j * d, (j + 1) * d), i * d);
      bl[i] = data.labels[j]!;
    });
    bank.add(bx, bl);
    const [loss, grads] = vg(params);
    const clipped = optim.clipGradNorm(grads, cfg.maxGradNorm);
    grads.forEach((g) => g.dispose());
    opt.step(params, clipped.grads);
    clipped.grads.forEach((g) => g.dispose());
    ema.update(model);
    step++;
    const nl: Tensor = lossAcc === null ? loss.add(0) : lossAcc.add(loss);
    const nn_: Tensor = normAcc === null ? clipped.norm.add(0) : normAcc.add(clipped.norm);
    lossAcc?.dispose();
    normAcc?.dispose();
    [lossAcc, normAcc] = [nl, nn_];
    accN++;
    loss.dispose();
    clipped.norm.dispose();
    if (step % cfg.logEvery === 0 || step === cfg.maxTrainSteps) {
      const l = (await nl.item()) / accN, g = (await nn_.item()) / accN;
      nl.dispose();
      nn_.dispose();
      lossAcc = normAcc = null;
      accN = 0;
      lastLoss = l;
      await run.logMetrics(step, {
        "training/loss_flow": l,
        "training/grad_norm": g,
        "training/lr": opt.lr,
      });
      progress.update(step, { loss: l });
    }
    if (step % cfg.checkpointEvery === 0 || step === cfg.maxTrainSteps) ckptPath = await saveCkpt();
  }
  lossAcc?.dispose();
  normAcc?.dispose();
  progress.done();

  // Samples and Fisher divergence with the EMA weights, dropout off.
  setTrain(false);
  ema.swapInto(model);
  const nS = 1024;
  const labels = Float32Array.from({ length: nS }, (_, i) => i % C);
  const y = tensor(labels);
  const x0 = new Generator(cfg.seed + 4242).normal([nS, d]);
  const res = await integrate((x, t, c) => model.forward(x, t, c), x0, {
    method: "midpoint",
    steps: cfg.sampleSteps,
    cond: y,
  });
  const xs = await res.x.data();
  res.x.dispose();
  x0.dispose();
  const two = (a: Float32Array) =>
    d === 2
      ? a
      : Float32Array.from({ length: (a.length / d) * 2 }, (_, i) =>
        a[Math.floor(i / 2) * d + (i % 2)]!);
  const dataIdx = Array.from({ length: nS }, (_, i) => Math.floor((i * data.n) / nS));
  const dataPts = new Float32Array(nS * d);
  dataIdx.forEach((j, i) => dataPts.set(data.x.subarray(j * d, (j + 1) * d), i * d));
  const png = await scatterPanels([
    { points: two(dataPts), labels: dataIdx.map((j) => data.labels[j]!), title: "data" },
    { points: two(xs), labels, title: `samples (${cfg.lossType}, step ${step})` },
  ]);
  const samplePlot = await run.writeFile(
    `samples/samples-step-${String(step).padStart(6, "0")}.png`,
    png,
  );
  let fisher: number | null = null;
  if (data.gmm) {
    const fd = await fisherDivergence(field, data.gmm, {
      generator: new Generator(cfg.seed + 99),
      n: cfg.fisherSamples,
      conditional: true,
    });
    fisher = fd.reduce((a, p) => a + p.value, 0) / fd.length;
    await run.logMetrics(step, {
      "eval/fisher_divergence": fisher,
      ...Object.fromEntries(fd.map((p) => [`eval/fisher_t${p.t}`, p.value])),
    });
  }
  ema.swapInto(model);
  y.dispose();
  model.dispose();
  opt.dispose();
  ema.dispose();

  console.log(`checkpoint:   ${ckptPath}`);
  console.log(`metrics:      ${run.metricsPath}`);
  console.log(`sample plot:  ${samplePlot}`);
  console.log(
    fisher === null
      ? "fisher divergence: n/a (no exact field for --data-dir data)"
      : `fisher divergence (EMA model vs exact class-conditional velocity, t = 0.5…0.8): ${
        fisher.toFixed(4)
      }`,
  );
  return {
    runDir: run.dir,
    checkpoint: ckptPath,
    metrics: run.metricsPath,
    samplePlot,
    steps: step,
    finalLoss: lastLoss,
    fisher,
  };
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    if (e instanceof RangeError || e instanceof TypeError) {
      console.error(`train:stablevm: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
