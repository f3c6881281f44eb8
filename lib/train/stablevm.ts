/**
 * @file The Stable Velocity Matching trainer (`--loss-type stablevm`, or plain CFM with
 * `si`) after SV's train.py, on class-labelled vectors: each step's data batch only refills
 * the per-class memory bank; the loss draws its samples and stable targets from the bank.
 * The bank is trainer state: checkpointed as `state.bank.*` tensors and restored on resume.
 * Also the datasets `train:stablevm` trains on: the embedded 8-mode ring (whose exact
 * field gives the Fisher divergence) or a labelled `.npz`.
 * @module
 */
import { checkStepFits, mlpStepSize } from "./budget.ts";
import type { Tensor } from "../tensor.ts";
import { Generator } from "../random.ts";
import * as nn from "../nn/mod.ts";
import { EMA } from "../optim/mod.ts";
import { buildOptimizer, type CfmOptimizer } from "./cfm.ts";
import { FileFormatError, type HostArray } from "../io/mod.ts";
import { loadArrayDataset } from "../data/arrays.ts";
import { GaussianMixture } from "../data/gmm.ts";
import { MemoryBank, siLoss, stableVmLoss } from "../flow/stablevm.ts";
import type { PathType } from "../flow/paths.ts";
import { reshape, tensor } from "../ops/mod.ts";
import type { LossOutput, StepContext, Trainer, TrainerState } from "./fit.ts";
import { buildCfmModel, checkCfmModelFits } from "./cfm_model.ts";
import { type RepaEncoder, type RepaSettings, withRepaTerm } from "./repa.ts";

/** A class-labelled dataset on the host. */
export interface LabelledSet {
  /** Rows, n × dim. */
  x: Float32Array;
  /** One integer label per row. */
  labels: Int32Array;
  /** Rows. */
  n: number;
  /** Values per row. */
  dim: number;
  /** Classes (max label + 1). */
  numClasses: number;
  /** The exact mixture when the data are the embedded one (for the Fisher divergence). */
  gmm: GaussianMixture | null;
  /** Extents of one row when the rows are images (e.g. [1, 28, 28]), for sample figures. */
  shape?: number[];
  /** Class names by label, for figures. */
  classNames?: readonly string[];
  /**
   * When the rows are an autoencoder's codes (`train:stablevm --latents`): the shape of the
   * images they stand for, and how sampled rows become those images, for figures and scores.
   */
  decoded?: { shape: number[]; decode: (rows: Float32Array) => Promise<Float32Array> };
}

/**
 * The embedded default of `train:stablevm`: 8192 samples of the 8-mode 2-D ring (radius 2,
 * variance 0.02), the components being the classes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { embeddedRing } from "../../mod.ts";
 * const d = embeddedRing(0);
 * assert.equal(d.n, 8192);
 * assert.equal(d.numClasses, 8);
 * ```
 */
export function embeddedRing(seed: number): LabelledSet {
  const n = 8192;
  const gmm = GaussianMixture.ring({ numModes: 8 });
  const { x, labels } = gmm.sampleHost(n, new Generator(seed + 7919));
  return { x, labels, n, dim: 2, numClasses: 8, gmm };
}

/**
 * Read a labelled dataset from an `.npz` (or a directory holding `data.npz`) with arrays
 * `x` [n, ...] and integer `labels` [n]; errors name the file and what is missing.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { encodeNpz, loadLabelledNpz } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeFile(`${dir}/data.npz`, encodeNpz({
 *   x: { data: new Float32Array(6), shape: [3, 2] },
 *   labels: { data: new Int32Array([0, 1, 1]), shape: [3], dtype: "<i8" },
 * }));
 * const d = await loadLabelledNpz(dir);
 * assert.equal(d.numClasses, 2);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadLabelledNpz(path: string): Promise<LabelledSet> {
  // loadArrayDataset checks labels before any integer conversion (fractional, negative or huge
  // labels are refused, not truncated) and refuses NaN/Inf data, naming the file and index.
  const d = await loadArrayDataset(path).catch((e: Error) => {
    throw e instanceof FileFormatError
      ? new FileFormatError(e.file, `--data-dir: ${e.message.slice(e.file.length + 2)}`)
      : new RangeError(`--data-dir: ${e.message}`, { cause: e });
  });
  return {
    x: d.x,
    labels: d.labels,
    n: d.n,
    dim: d.dim,
    numClasses: d.numClasses,
    gmm: null,
    shape: d.shape,
  };
}

/** Trainer state kept on the host: `save` returns host arrays only. */
export interface HostTrainerState extends TrainerState {
  /** The state as host arrays (borrowed). */
  save(): Record<string, HostArray>;
}

/**
 * A memory bank as trainer state: its contents as `bank.data`/`bank.counts`/`bank.heads`
 * host arrays (integers are exact in f32 up to 2^24).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bankState, MemoryBank, tensor } from "../../mod.ts";
 * const a = new MemoryBank({ numClasses: 2, dim: 1 });
 * a.add([1, 2, 3], [0, 0, 1]);
 * const b = new MemoryBank({ numClasses: 2, dim: 1 });
 * const saved = bankState(a).save();
 * await bankState(b).load(Object.fromEntries(
 *   Object.entries(saved).map(([k, v]) => [k, tensor(v.data, v.shape)]),
 * ));
 * assert.deepEqual(b.entries(0), a.entries(0));
 * ```
 */
export function bankState(bank: MemoryBank): HostTrainerState {
  return {
    save() {
      const s = bank.state();
      return {
        "bank.data": { shape: [s.data.length], data: s.data },
        "bank.counts": { shape: [s.counts.length], data: Float32Array.from(s.counts) },
        "bank.heads": { shape: [s.heads.length], data: Float32Array.from(s.heads) },
      };
    },
    async load(st: Record<string, Tensor>) {
      const get = async (k: string) => {
        if (!st[k]) throw new RangeError(`Expected trainer state "${k}" in the checkpoint`);
        return await st[k]!.data();
      };
      bank.loadState({
        data: Float32Array.from(await get("bank.data")),
        counts: Int32Array.from(await get("bank.counts")),
        heads: Int32Array.from(await get("bank.heads")),
      });
    },
  };
}

/** Settings of {@linkcode stableVmTrainer} (a subset of the `train:stablevm` config). */
export interface StableVmTrainerConfig {
  /** "stablevm" or "si" (plain CFM). */
  lossType: "si" | "stablevm";
  /** Bank entries per class. */
  bankCapacityPerClass: number;
  /** Fill every class ring before training (else at least one entry each). */
  prefillBankFully: boolean;
  /** Chunked bank pass (stable_vm_efficient). */
  efficient: boolean;
  /** Batch size. */
  batchSize: number;
  /** Adam learning rate. */
  learningRate: number;
  /** The update rule (absent, as in configs written before it: Adam). */
  optimizer?: CfmOptimizer;
  /** Muon's learning rate for the weight matrices (default 0.02; `optimizer` "muon" only). */
  muonLr?: number;
  /** Steps of linear learning-rate warm-up (0 or absent, as in configs written before it: none). */
  warmupSteps?: number;
  /** MLP width. */
  hidden: number;
  /** MLP blocks. */
  blocks: number;
  /** Dropout. */
  dropout: number;
  /** EMA decay. */
  emaDecay: number;
  /** Seed; the model is initialised from `seed + 1`. */
  seed: number;
  /** Interpolation path (SV `--path-type`; default "linear"). */
  pathType?: PathType;
  /** Time distribution (SV `--weighting`; default "uniform"). */
  weighting?: "uniform" | "lognormal";
  /**
   * The network: SV's AdaLN-Zero MLP (default) or, for image rows, a small DiT ("dit-tiny":
   * width `hidden`, `blocks` blocks, patch 4 for 28×28), which `--use-proj-loss` needs.
   */
  model?: "adaln-mlp" | "dit-tiny";
  /** REPA (with `model` "dit-tiny" and an encoder; see `RepaSettings`). */
  useProjLoss?: boolean;
  /** Blocks before the projector. */
  encoderDepth?: number;
  /** Projector width. */
  projectorDim?: number;
  /** The encoder's feature width (the projector's output), recorded for resumes. */
  projFeatureDim?: number;
  /** VA-REPA schedule. */
  projWeightSchedule?: RepaSettings["projWeightSchedule"];
  /** VA-REPA τ. */
  projTau?: number;
  /** VA-REPA k. */
  projK?: number;
  /** Projection-loss coefficient (SV 0.5). */
  projCoeff?: number;
}

/** The network of a StableVM run. */
export type StableVmNet = nn.AdaLNMLP | nn.DiT;

/** A StableVM trainer and its bank. */
export interface StableVmTrainer extends Trainer<StableVmNet> {
  /** The memory bank. */
  readonly bank: MemoryBank;
}

/**
 * The velocity of a StableVM network on flat rows x [n, d] (a DiT sees them as images of
 * `shape` [C, H, W] and returns rows again), as the bank, the loss and the samplers use it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, stableVmField, tensor } from "../../mod.ts";
 * const net = new nn.DiT({ inputSize: 4, patchSize: 2, inChannels: 1, hiddenSize: 8, depth: 1, numHeads: 2, numClasses: 2, seed: 0 });
 * const v = stableVmField(net, [1, 4, 4])(randn([3, 16], { seed: 1 }), tensor([0.1, 0.5, 0.9]), tensor([0, 1, 2]));
 * assert.deepEqual(v.shape, [3, 16]);
 * ```
 */
export function stableVmField(
  model: StableVmNet,
  shape?: readonly number[],
): (x: Tensor, t: Tensor, y?: Tensor) => Tensor {
  if (!(model instanceof nn.DiT)) return (x, t, y) => model.forward(x, t, y);
  return (x, t, y) => {
    const n = x.shape[0]!;
    return reshape(model.forward(reshape(x, [n, ...shape!]), t, y), [n, x.shape[1]!]);
  };
}

/** [C, H, W] of image rows (1 or 3 channels), or null. */
function imageShapeOf(data: LabelledSet): number[] | null {
  const s = data.shape?.length === 2 ? [1, ...data.shape] : data.shape;
  return s?.length === 3 && (s[0] === 1 || s[0] === 3) ? [...s] : null;
}

/**
 * Refuse (before a run is created) a `model` that does not fit the data: "dit-tiny" needs
 * image rows ([H, W] or [C, H, W] with 1 or 3 channels, e.g. `--data-dir fashion-mnist`),
 * a width that is a multiple of 4, and a training step that fits the device.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkStableVmModel, embeddedRing } from "../../mod.ts";
 * assert.throws(() => checkStableVmModel({ model: "dit-tiny", hidden: 32, blocks: 2, batchSize: 8 }, embeddedRing(0)),
 *   /--model dit-tiny needs image rows/);
 * ```
 */
export function checkStableVmModel(
  c: Pick<StableVmTrainerConfig, "model" | "hidden" | "blocks" | "batchSize">,
  data: LabelledSet,
): void {
  if ((c.model ?? "adaln-mlp") !== "dit-tiny") return;
  const shape = imageShapeOf(data);
  if (!shape) {
    throw new RangeError(
      `--model dit-tiny needs image rows (e.g. --data-dir fashion-mnist) but the data are ` +
        `${data.dim}-D vectors${data.shape ? ` of shape [${data.shape}]` : ""}`,
    );
  }
  if (c.hidden % 4 !== 0) {
    throw new RangeError(
      `Expected --hidden to be a multiple of 4 for dit-tiny but found ${c.hidden}`,
    );
  }
  checkCfmModelFits(
    {
      model: "dit-tiny",
      hidden: c.hidden,
      depth: c.blocks,
      dataShape: shape,
      numClasses: 0,
      cfgDropout: 0,
      seed: 0,
    },
    c.batchSize,
  );
}

/**
 * The `train:stablevm` trainer: the AdaLN-Zero MLP (or a DiT for image rows), Adam (or AdamW, Muon), EMA,
 * and the memory bank (prefilled on a fresh run, restored from the checkpoint on resume).
 * With `useProjLoss` (a DiT and `repa`, the encoder) the loss adds REPA's projection term
 * coeff · projLoss with the VA-REPA schedule, logged as `training/loss_proj`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createRun, embeddedRing, fit, Generator, stableVmTrainer } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const cfg = { lossType: "stablevm" as const, bankCapacityPerClass: 16, prefillBankFully: false,
 *   efficient: false, batchSize: 32, learningRate: 1e-3, hidden: 16, blocks: 1, dropout: 0,
 *   emaDecay: 0.99, seed: 0 };
 * const t = stableVmTrainer(cfg, embeddedRing(0));
 * const run = await createRun("train:stablevm", { outputDir: dir, config: cfg });
 * await fit(t, { run, generator: new Generator(0), maxSteps: 2, progress: false });
 * assert.ok(t.bank.count(0) >= 1);
 * t.model.dispose(); t.optimizer.dispose(); t.ema!.dispose();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function stableVmTrainer(
  c: StableVmTrainerConfig,
  data: LabelledSet,
  repa?: RepaEncoder,
): StableVmTrainer {
  const C = data.numClasses, d = data.dim;
  const dit = c.model === "dit-tiny", shape = imageShapeOf(data) ?? [];
  if (c.useProjLoss && !(dit && repa)) {
    throw new TypeError("stableVmTrainer: useProjLoss needs model dit-tiny and the encoder");
  }
  if (dit) checkStableVmModel(c, data);
  else {
    checkStepFits(
      (k) =>
        mlpStepSize({
          hidden: k["--hidden"]!,
          depth: c.blocks,
          width: d,
          batch: k["--batch-size"]!,
        }),
      { "--hidden": c.hidden, "--batch-size": c.batchSize },
    );
  }
  const model: StableVmNet = dit
    ? buildCfmModel({
      ...c,
      model: "dit-tiny",
      depth: c.blocks,
      dataShape: shape,
      numClasses: C,
      cfgDropout: 0.1,
    }) as nn.DiT
    : new nn.AdaLNMLP({
      dim: d,
      hidden: c.hidden,
      blocks: c.blocks,
      dropout: c.dropout,
      numClasses: C,
      classDropoutProb: 0.1,
      seed: c.seed + 1,
    });
  // The loss already replaces 10% of labels by the null label (and draws those samples from
  // the global pool), so the embedder must not drop labels a second time: keep it in eval
  // mode; its table still has the null row. (`fit` restores these flags after sampling.)
  model.train(true);
  model.yEmbedder?.eval();
  const bank = new MemoryBank({ numClasses: C, capacityPerClass: c.bankCapacityPerClass, dim: d });
  // With REPA the field also keeps the projected tokens of this forward pass.
  let projected: Tensor | null = null;
  const field = !repa ? stableVmField(model, shape) : (x: Tensor, t: Tensor, y: Tensor) => {
    const n = x.shape[0]!;
    const r = (model as nn.DiTWithProjector).forwardProjected(reshape(x, [n, ...shape]), t, y);
    projected = r.projected;
    return reshape(r.out, [n, d]);
  };
  const withRepa = (r: { loss: Tensor; x: Tensor; t: Tensor }): LossOutput => {
    return repa ? withRepaTerm(r.loss, repa.model, r.x, projected!, r.t, c) : { loss: r.loss };
  };
  let batch: { x: Float32Array; labels: Int32Array } | undefined;
  return {
    model,
    optimizer: buildOptimizer(c.optimizer ?? "adam", model, {
      lr: c.learningRate,
      muonLr: c.muonLr,
    }),
    ema: new EMA(model, { decay: c.emaDecay }),
    ...(repa ? { lossMetric: "training/loss" } : {}),
    bank,
    state: bankState(bank),
    setup(ctx: StepContext<StableVmNet>) {
      if (ctx.resumed) return;
      bank.prefill({ x: data.x, labels: data.labels }, {
        fully: c.prefillBankFully,
        generator: ctx.generator,
      });
    },
    prepare(ctx: StepContext<StableVmNet>) {
      // SV: the dataloader batch only refills the bank; the loss draws from the bank.
      const B = c.batchSize;
      const idx = ctx.generator.uniformHost(B);
      const bx = new Float32Array(B * d), bl = new Int32Array(B);
      idx.forEach((u, i) => {
        const j = Math.min(data.n - 1, Math.floor(u * data.n));
        bx.set(data.x.subarray(j * d, (j + 1) * d), i * d);
        bl[i] = data.labels[j]!;
      });
      bank.add(bx, bl);
      batch = { x: bx, labels: bl };
    },
    loss(ctx: StepContext<StableVmNet>) {
      const o = {
        bank,
        batchSize: c.batchSize,
        generator: ctx.generator,
        efficient: c.efficient,
        path: c.pathType,
        weighting: c.weighting,
      };
      if (c.lossType === "stablevm") return withRepa(stableVmLoss(field, o));
      // SV's SILoss regresses the dataloader batch itself (labels with CFG dropout), not
      // draws from the bank.
      const x = ctx.track(tensor(batch!.x, [batch!.labels.length, d]));
      return withRepa(siLoss(field, { ...o, x, labels: batch!.labels }));
    },
  };
}
