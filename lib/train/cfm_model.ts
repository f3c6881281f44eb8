/**
 * @file The networks of `train:cfm` runs and their checkpoints: the model a run's config
 * describes, reading a checkpoint given as a file, run directory or URL (errors name the
 * path), loading its EMA or raw weights, and sampling from it. Used by the `train:cfm`,
 * `sample`, `eval` and `cfm:table` tasks.
 * @module
 */
import { checkStepFits, ditStepSize, mlpStepSize } from "./budget.ts";
import type { Tensor } from "../tensor.ts";
import { denoApi, isNotFound } from "../_util.ts";
import * as nn from "../nn/mod.ts";
import type { VelocityFn } from "../flow/paths.ts";
import { shortcutDtBase } from "../flow/shortcut.ts";
import { full } from "../ops/mod.ts";
import { type Generated, type GenerateOptions, generateSamples } from "../flow/generate.ts";
import { type Checkpoint, CheckpointError, FileFormatError, loadCheckpoint } from "../io/mod.ts";

/**
 * Datasets of `train:cfm`: the 2-D toys and Fashion-MNIST.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CFM_DATASETS } from "../../mod.ts";
 * assert.equal(CFM_DATASETS.join("|"), "8gaussians|moons|checkerboard|spirals|fashion-mnist");
 * ```
 */
export const CFM_DATASETS = [
  "8gaussians",
  "moons",
  "checkerboard",
  "spirals",
  "fashion-mnist",
] as const;
/** A dataset name. */
export type CfmDataset = typeof CFM_DATASETS[number];

/**
 * Models of `train:cfm`: the toy MLP and a small class-conditional DiT for images.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CFM_MODELS } from "../../mod.ts";
 * assert.ok(CFM_MODELS.includes("dit-tiny"));
 * ```
 */
export const CFM_MODELS = ["velocity-mlp", "dit-tiny"] as const;
/** A model name. */
export type CfmModel = typeof CFM_MODELS[number];

/** What a model needs from a run's configuration (a subset of the `train:cfm` config). */
export interface CfmModelConfig {
  /** Which network. */
  model: CfmModel;
  /** Hidden width. */
  hidden: number;
  /** Hidden layers (MLP) or transformer blocks (DiT). */
  depth: number;
  /** Shape of one sample, e.g. [2] or [1, 28, 28]. */
  dataShape: number[];
  /** Classes for conditioning (0: unconditional). */
  numClasses: number;
  /** Label dropout for classifier-free guidance. */
  cfgDropout: number;
  /** Seed; the model is initialised from `seed + 1`. */
  seed: number;
  /** Step-size conditioned: a shortcut model (train:shortcut, train:anchor, train:local). */
  dtConditioning?: boolean;
  /** A shortcut model's finest step 1/denoiseTimesteps (default 128). */
  denoiseTimesteps?: number;
  /** VelocityMLP only: the scalar-gated input skip v = f + c·x (flat images). */
  inputSkip?: boolean;
  /** DiT only: carry REPA's projector (`nn.DiTWithProjector`; needs the three below). */
  useProjLoss?: boolean;
  /** Blocks before the projector (REPA `--encoder-depth`). */
  encoderDepth?: number;
  /** The projector MLP's hidden width. */
  projectorDim?: number;
  /** The projector's output width: the REPA encoder's feature width. */
  projFeatureDim?: number;
}

/** A velocity model of either kind. */
export type CfmNet = nn.VelocityMLP | nn.DiT;

/**
 * Build the network a config describes (fresh initialisation from `seed + 1`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildCfmModel } from "../../mod.ts";
 * const m = buildCfmModel({ model: "velocity-mlp", hidden: 8, depth: 2, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 });
 * assert.ok(m.numParameters() > 0);
 * m.dispose();
 * ```
 */
export function buildCfmModel(c: CfmModelConfig): CfmNet {
  if (c.model === "velocity-mlp") {
    if (c.dataShape.length !== 1) {
      throw new RangeError(
        `--model velocity-mlp needs flat samples but the data have shape [${c.dataShape}]; ` +
          `use --model dit-tiny for images`,
      );
    }
    return new nn.VelocityMLP({
      dim: c.dataShape[0]!,
      hidden: c.hidden,
      depth: c.depth,
      numClasses: c.numClasses || undefined,
      classDropoutProb: c.cfgDropout,
      dtConditioning: c.dtConditioning,
      inputSkip: c.inputSkip,
      seed: c.seed + 1,
    });
  }
  if (c.dataShape.length !== 3) {
    throw new RangeError(`--model dit-tiny needs images [C, H, W] but found [${c.dataShape}]`);
  }
  const [ch, h] = c.dataShape as [number, number, number];
  // 28 = 7·4: patch 4 gives 49 tokens, small enough for a CPU adapter.
  const patch = h % 4 === 0 ? 4 : h % 2 === 0 ? 2 : 1;
  const opts = {
    inputSize: h,
    patchSize: patch,
    inChannels: ch,
    hiddenSize: c.hidden,
    depth: c.depth,
    numHeads: c.hidden % 4 === 0 ? 4 : 1,
    numClasses: c.numClasses,
    classDropoutProb: c.cfgDropout,
    dtConditioning: c.dtConditioning,
    seed: c.seed + 1,
  };
  if (!c.useProjLoss) return new nn.DiT(opts);
  // The projector is part of the checkpoint (REPA's `projectors.0.*`); sampling ignores it.
  return new nn.DiTWithProjector({
    ...opts,
    encoderDepth: c.encoderDepth ?? Math.max(1, c.depth >> 1),
    projectorDim: c.projectorDim ?? 256,
    featureDim: c.projFeatureDim!,
  });
}

/**
 * Refuse (with a `RangeError` naming `--hidden`/`--batch-size` values that fit) a model and
 * batch whose training step would not fit the backend; call before building the model.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkCfmModelFits } from "../../mod.ts";
 * const c = { model: "velocity-mlp" as const, hidden: 1e9, depth: 2, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 };
 * assert.throws(() => checkCfmModelFits(c, 256), /--hidden 1000000000 with --batch-size 256 needs about/);
 * checkCfmModelFits({ ...c, hidden: 64 }, 256);
 * ```
 */
export function checkCfmModelFits(c: CfmModelConfig, batchSize: number): void {
  const knobs = { "--hidden": c.hidden, "--batch-size": batchSize };
  if (c.model === "velocity-mlp" || c.dataShape.length !== 3) {
    const width = c.dataShape.reduce((a, b) => a * b, 1);
    checkStepFits(
      (k) =>
        mlpStepSize({ hidden: k["--hidden"]!, depth: c.depth, width, batch: k["--batch-size"]! }),
      knobs,
    );
    return;
  }
  const [ch, h] = c.dataShape as [number, number, number];
  const patch = h % 4 === 0 ? 4 : h % 2 === 0 ? 2 : 1;
  checkStepFits((k) =>
    ditStepSize({
      hidden: k["--hidden"]!,
      depth: c.depth,
      tokens: (h / patch) ** 2,
      heads: k["--hidden"]! % 4 === 0 ? 4 : 1,
      patchDim: ch * patch * patch,
      batch: k["--batch-size"]!,
    }), knobs);
}

/**
 * The velocity function `(x, t, y?) => v` of a model, as the samplers take it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildCfmModel, randn, velocityOf, zeros } from "../../mod.ts";
 * const m = buildCfmModel({ model: "velocity-mlp", hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 });
 * assert.deepEqual(velocityOf(m)(randn([3, 2], { seed: 1 }), zeros([3])).shape, [3, 2]);
 * ```
 */
export function velocityOf(model: CfmNet): VelocityFn {
  return (x: Tensor, t: Tensor, y?: Tensor) => model.forward(x, t, y);
}

/**
 * Sample a model (its null label and guidance handled): {@linkcode generateSamples} with
 * the model's velocity. A shortcut model (`dtEmbedder`) takes N = `steps` Euler steps of
 * d = 1/N at dtBase = log2 N; N must be a power of two ≤ `denoiseTimesteps` (RangeError).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildCfmModel, sampleCfmModel } from "../../mod.ts";
 * const m = buildCfmModel({ model: "velocity-mlp", hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 });
 * const g = await sampleCfmModel(m, [2], { n: 4, sampler: "heun", steps: 2, seed: 0 });
 * assert.equal(g.x.length, 8);
 * assert.equal(g.nfe, 4);
 * ```
 */
export function sampleCfmModel(
  model: CfmNet,
  dataShape: readonly number[],
  o: Omit<GenerateOptions, "nullLabel"> & { denoiseTimesteps?: number },
): Promise<Generated> {
  let v = velocityOf(model);
  if (model.dtEmbedder) {
    if (o.sampler !== "euler") {
      throw new RangeError(
        `A shortcut model samples with --sampler euler (N steps of d = 1/N), not ${o.sampler}`,
      );
    }
    let k = 0;
    try {
      k = shortcutDtBase(o.steps, o.denoiseTimesteps);
    } catch (e) {
      throw new RangeError(`--num-steps: ${(e as Error).message}`);
    }
    const dit = model instanceof nn.DiT;
    v = (x, t, y) => {
      const d = full([x.shape[0]!], k);
      return dit ? model.forward(x, t, y, undefined, d) : model.forward(x, t, y, d);
    };
  }
  return generateSamples(v, dataShape, {
    ...o,
    nullLabel: model.yEmbedder?.numClasses,
  });
}

/** Tasks whose checkpoints these readers take (the shortcut ones are step-conditioned). */
const SAMPLEABLE_TASKS = ["train:cfm", "train:shortcut", "train:anchor", "train:local"];

/** Where a checkpoint came from and what it holds. */
export interface LoadedCfmCheckpoint {
  /** The checkpoint file (or URL) actually read. */
  path: string;
  /** The run directory it belongs to, when it is inside one (else null). */
  runDir: string | null;
  /** The checkpoint. */
  checkpoint: Checkpoint;
  /** Its `train:cfm` configuration. */
  config: CfmModelConfig & { dataset: CfmDataset } & Record<string, unknown>;
}

const fsApi = () => denoApi("readCfmCheckpoint", "pass the bytes to decodeCheckpoint");

async function isFile(p: string): Promise<boolean> {
  try {
    return (await fsApi().stat(p)).isFile;
  } catch {
    return false;
  }
}

/** Resolve a local file or run directory to the checkpoint file and its run directory. */
async function locate(spec: string): Promise<{ path: string; runDir: string | null }> {
  let st: Deno.FileInfo;
  try {
    st = await fsApi().stat(spec);
  } catch (e) {
    if (isNotFound(e)) {
      throw new RangeError(`--checkpoint ${spec}: no such file or directory`);
    }
    throw e;
  }
  let path = spec, runDir: string | null = null;
  if (st.isDirectory) {
    const dir = spec.replace(/\/+$/, "");
    if (await isFile(`${dir}/checkpoints/last.safetensors`)) {
      path = `${dir}/checkpoints/last.safetensors`;
      runDir = dir;
    } else if (await isFile(`${dir}/last.safetensors`)) path = `${dir}/last.safetensors`;
    else {
      throw new RangeError(
        `--checkpoint ${spec}: a directory without checkpoints/last.safetensors ` +
          `(expected a train:cfm run directory or a .safetensors file)`,
      );
    }
  }
  if (runDir === null) {
    const m = /^(.*?)\/?checkpoints\/[^/]+$/.exec(path);
    const cand = m ? (m[1] || ".") : null;
    if (cand !== null && await isFile(`${cand}/config.json`)) runDir = cand;
  }
  return { path, runDir };
}

/**
 * Read a `train:cfm` checkpoint given as a file, a run directory (its
 * `checkpoints/last.safetensors`) or an http(s) URL. Missing, unreadable or foreign files
 * raise a `RangeError` naming the path (as `--checkpoint <path>: …`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readCfmCheckpoint } from "../../mod.ts";
 * await assert.rejects(readCfmCheckpoint("no/such/run"), /--checkpoint no\/such\/run: no such file/);
 * ```
 */
export async function readCfmCheckpoint(spec: string): Promise<LoadedCfmCheckpoint> {
  if (typeof spec !== "string" || spec === "") {
    throw new RangeError("Expected --checkpoint to be a file, run directory or URL");
  }
  const { path, runDir } = /^https?:\/\//.test(spec)
    ? { path: spec, runDir: null }
    : await locate(spec);
  let checkpoint: Checkpoint;
  try {
    checkpoint = await loadCheckpoint(path);
  } catch (e) {
    if (e instanceof CheckpointError || e instanceof FileFormatError) {
      throw new RangeError(`--checkpoint ${path}: ${e.message.replace(`${path}: `, "")}`);
    }
    if (isNotFound(e)) {
      throw new RangeError(`--checkpoint ${path}: no such file or directory`);
    }
    throw new RangeError(`--checkpoint ${path}: cannot be read (${(e as Error).message})`);
  }
  const cfg = checkpoint.config as Record<string, unknown> | undefined;
  if (
    !cfg || !SAMPLEABLE_TASKS.includes(cfg.task as string) || !Array.isArray(cfg.dataShape) ||
    typeof cfg.model !== "string"
  ) {
    throw new RangeError(
      `--checkpoint ${path}: not a train:cfm checkpoint (its config has no task "train:cfm" ` +
        `with model and dataShape)`,
    );
  }
  return { path, runDir, checkpoint, config: cfg as LoadedCfmCheckpoint["config"] };
}

/**
 * Build the model of a loaded checkpoint and load its EMA (default) or raw weights; the
 * model is returned in eval mode.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildCfmModel, cfmModelFromCheckpoint } from "../../mod.ts";
 * const config = { task: "train:cfm", dataset: "moons" as const, model: "velocity-mlp" as const, hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 };
 * const src = buildCfmModel(config);
 * const m = cfmModelFromCheckpoint({ path: "mem", runDir: null, config, checkpoint: { model: src.stateDict(), step: 0 } });
 * assert.equal(m.numParameters(), src.numParameters());
 * ```
 */
export function cfmModelFromCheckpoint(ck: LoadedCfmCheckpoint, useEma = true): CfmNet {
  const model = buildCfmModel(ck.config);
  // EMA holds parameters only; buffers (DiT's pos_embed) come from the model section.
  const weights = useEma && ck.checkpoint.ema
    ? { ...ck.checkpoint.model, ...ck.checkpoint.ema }
    : ck.checkpoint.model;
  try {
    model.loadStateDict(weights);
  } catch (e) {
    model.dispose();
    throw new RangeError(
      `--checkpoint ${ck.path}: weights do not fit the ${ck.config.model} its config describes ` +
        `(${(e as Error).message})`,
    );
  }
  model.eval();
  return model;
}
