/**
 * @file Pieces shared by the flow-matching tasks (`train:cfm`, `sample`, `eval`,
 * `cfm_table`): the model a `train:cfm` config describes, checkpoint resolution (file, run
 * directory or URL) with errors that name the path, and the sampling call both `sample` and
 * `eval` make.
 * @module
 */
import {
  type Checkpoint,
  CheckpointError,
  classifierFreeGuidance,
  FileFormatError,
  full,
  Generator,
  integrate,
  type IntegrateResult,
  loadCheckpoint,
  nn,
  type SamplerMethod,
  shortcutDtBase,
  type Tensor,
  tensor,
  type VelocityFn,
} from "../mod.ts";

/**
 * Datasets of `train:cfm`: the 2-D toys and Fashion-MNIST.
 *
 * @example
 * ```ts
 * import { CFM_DATASETS } from "./_train_loop.ts";
 * console.log(CFM_DATASETS.join("|"));
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
 * import { CFM_MODELS } from "./_train_loop.ts";
 * console.log(CFM_MODELS.includes("dit-tiny")); // true
 * ```
 */
export const CFM_MODELS = ["velocity-mlp", "dit-tiny"] as const;
/** A model name. */
export type CfmModel = typeof CFM_MODELS[number];

/** What a model needs from a run's configuration (the subset of `TrainCfmConfig`). */
export interface ModelConfig {
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
  /** Step-size conditioned (train:shortcut, train:anchor, train:local checkpoints). */
  dtConditioning?: boolean;
  /** Their finest step 1/denoiseTimesteps (default 128). */
  denoiseTimesteps?: number;
}

/** A velocity model of either kind. */
export type CfmNet = nn.VelocityMLP | nn.DiT;

/**
 * Build the network a config describes (fresh initialisation from `seed + 1`).
 *
 * @example
 * ```ts
 * import { buildModel } from "./_train_loop.ts";
 * const m = buildModel({ model: "velocity-mlp", hidden: 8, depth: 2, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 });
 * console.log(m.numParameters());
 * ```
 */
export function buildModel(c: ModelConfig): CfmNet {
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
      seed: c.seed + 1,
    });
  }
  if (c.dataShape.length !== 3) {
    throw new RangeError(`--model dit-tiny needs images [C, H, W] but found [${c.dataShape}]`);
  }
  const [ch, h] = c.dataShape as [number, number, number];
  // 28 = 7·4: patch 4 gives 49 tokens, small enough for a CPU adapter.
  const patch = h % 4 === 0 ? 4 : h % 2 === 0 ? 2 : 1;
  return new nn.DiT({
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
  });
}

/**
 * The velocity function `(x, t, y?) => v` of a model, as the samplers take it.
 *
 * @example
 * ```ts
 * import { randn, zeros } from "../mod.ts";
 * import { buildModel, velocityOf } from "./_train_loop.ts";
 * const m = buildModel({ model: "velocity-mlp", hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 });
 * console.log(velocityOf(m)(randn([3, 2], { seed: 1 }), zeros([3])).shape); // [3, 2]
 * ```
 */
export function velocityOf(model: CfmNet): VelocityFn {
  return (x: Tensor, t: Tensor, y?: Tensor) => model.forward(x, t, y);
}

/** Tasks whose checkpoints `sample`/`eval` read (the shortcut ones sample N = 2^k steps). */
const SAMPLEABLE_TASKS = ["train:cfm", "train:shortcut", "train:anchor", "train:local"];

/** Where a checkpoint came from and what it holds. */
export interface LoadedCheckpoint {
  /** The checkpoint file (or URL) actually read. */
  path: string;
  /** The run directory it belongs to, when it is inside one (else null). */
  runDir: string | null;
  /** The checkpoint. */
  checkpoint: Checkpoint;
  /** Its `train:cfm` configuration. */
  config: ModelConfig & { dataset: CfmDataset } & Record<string, unknown>;
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await Deno.stat(p)).isFile;
  } catch {
    return false;
  }
}

/**
 * Read a `train:cfm` checkpoint given as a file, a run directory (its
 * `checkpoints/last.safetensors`) or an http(s) URL. Missing, unreadable or foreign files
 * raise a `RangeError` naming the path.
 *
 * @example
 * ```ts
 * import { resolveCheckpoint } from "./_train_loop.ts";
 * const err = await resolveCheckpoint("no/such/run").catch((e: Error) => e.message);
 * console.log(err); // --checkpoint no/such/run: no such file or directory
 * ```
 */
export async function resolveCheckpoint(spec: string): Promise<LoadedCheckpoint> {
  if (typeof spec !== "string" || spec === "") {
    throw new RangeError("Expected --checkpoint to be a file, run directory or URL");
  }
  const remote = /^https?:\/\//.test(spec);
  let path = spec;
  let runDir: string | null = null;
  if (!remote) {
    let st: Deno.FileInfo;
    try {
      st = await Deno.stat(spec);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new RangeError(`--checkpoint ${spec}: no such file or directory`);
      }
      throw e;
    }
    if (st.isDirectory) {
      const dir = spec.replace(/\/+$/, "");
      const inRun = `${dir}/checkpoints/last.safetensors`;
      if (await isFile(inRun)) {
        path = inRun;
        runDir = dir;
      } else if (await isFile(`${dir}/last.safetensors`)) {
        path = `${dir}/last.safetensors`;
      } else {
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
  }
  let checkpoint: Checkpoint;
  try {
    checkpoint = await loadCheckpoint(path);
  } catch (e) {
    if (e instanceof CheckpointError || e instanceof FileFormatError) {
      throw new RangeError(`--checkpoint ${path}: ${e.message.replace(`${path}: `, "")}`);
    }
    if (e instanceof Deno.errors.NotFound) {
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
  return { path, runDir, checkpoint, config: cfg as LoadedCheckpoint["config"] };
}

/**
 * Build the model of a loaded checkpoint and load its EMA (default) or raw weights; the
 * model is returned in eval mode.
 *
 * @example
 * ```ts
 * import { buildModel, modelFromCheckpoint } from "./_train_loop.ts";
 * const config = { task: "train:cfm", dataset: "moons" as const, model: "velocity-mlp" as const, hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 };
 * const src = buildModel(config);
 * const m = modelFromCheckpoint({ path: "mem", runDir: null, config, checkpoint: { model: src.stateDict(), step: 0 } });
 * console.log(m.numParameters() === src.numParameters()); // true
 * ```
 */
export function modelFromCheckpoint(ck: LoadedCheckpoint, useEma = true): CfmNet {
  const model = buildModel(ck.config);
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

/** Options of {@linkcode generateSamples}. */
export interface GenerateOptions {
  /** Number of samples. */
  n: number;
  /** Integration method. */
  sampler: SamplerMethod;
  /** Steps of the fixed-step methods. */
  steps: number;
  /** Seed of the source noise (and Euler–Maruyama noise). */
  seed: number;
  /** dopri5 tolerances. */
  atol?: number;
  /** dopri5 relative tolerance. */
  rtol?: number;
  /** Labels [n] for a class-conditional model (default: the null class). */
  labels?: Float32Array;
  /** Classifier-free guidance scale (1: none). */
  cfgScale?: number;
  /** Guidance interval in our convention (t = 1 is data). */
  guidanceLow?: number;
  /** Upper end of the guidance interval. */
  guidanceHigh?: number;
  /** Keep the trajectory (for straightness; only when everything fits one batch). */
  record?: boolean;
  /** Rows per integration batch (default: all at once). */
  batch?: number;
  /** Shortcut models: the finest step 1/denoiseTimesteps they were trained for (default 128). */
  denoiseTimesteps?: number;
}

/** Samples on the host plus what the integration cost. */
export interface Generated {
  /** n × prod(dataShape) values. */
  x: Float32Array;
  /** Velocity evaluations per sample (per batch). */
  nfe: number;
  /** The integration result of the single batch when `record` was set. */
  recorded?: IntegrateResult;
}

/**
 * Integrate the model's flow from N(0, I) noise (t = 0) to data (t = 1), in batches.
 * With `record`, the caller owns `recorded.x` and `recorded.trajectory`.
 *
 * @example
 * ```ts
 * import { buildModel, generateSamples } from "./_train_loop.ts";
 * const m = buildModel({ model: "velocity-mlp", hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 });
 * const g = await generateSamples(m, [2], { n: 4, sampler: "heun", steps: 2, seed: 0 });
 * console.log(g.x.length, g.nfe); // 8 4
 * ```
 */
export async function generateSamples(
  model: CfmNet,
  dataShape: readonly number[],
  o: GenerateOptions,
): Promise<Generated> {
  const conditional = model.yEmbedder !== undefined;
  let v = velocityOf(model);
  if (model.dtEmbedder) v = shortcutVelocity(model, o.sampler, o.steps, o.denoiseTimesteps);
  const scale = o.cfgScale ?? 1;
  if (conditional && scale !== 1) {
    v = classifierFreeGuidance(v, {
      scale,
      nullLabel: model.yEmbedder!.numClasses,
      low: o.guidanceLow ?? 0,
      high: o.guidanceHigh ?? 1,
    });
  }
  const gen = new Generator(o.seed);
  const row = dataShape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(o.n * row);
  const batch = o.record ? o.n : Math.max(1, Math.min(o.n, o.batch ?? o.n));
  let nfe = 0;
  let recorded: IntegrateResult | undefined;
  for (let s = 0; s < o.n; s += batch) {
    const b = Math.min(batch, o.n - s);
    const x0 = gen.normal([b, ...dataShape]);
    const nullLabel = conditional ? model.yEmbedder!.numClasses : 0;
    const cond = conditional
      ? tensor(o.labels ? o.labels.subarray(s, s + b) : new Float32Array(b).fill(nullLabel))
      : undefined;
    try {
      const res = await integrate(v, x0, {
        method: o.sampler,
        steps: o.steps,
        atol: o.atol,
        rtol: o.rtol,
        cond,
        record: o.record,
        generator: gen,
      });
      nfe = Math.max(nfe, res.nfe);
      out.set(await res.x.data(), s * row);
      if (o.record) recorded = res;
      else res.x.dispose();
    } finally {
      x0.dispose();
      cond?.dispose();
    }
  }
  return recorded ? { x: out, nfe, recorded } : { x: out, nfe };
}

/** A shortcut model's N-step Euler velocity: dtBase = log2 N (d = 1/N), N a power of two. */
function shortcutVelocity(
  model: CfmNet,
  sampler: string,
  steps: number,
  denoiseTimesteps = 128,
): VelocityFn {
  if (sampler !== "euler") {
    throw new RangeError(
      `A shortcut model samples with --sampler euler (N steps of d = 1/N), not ${sampler}`,
    );
  }
  let k: number;
  try {
    k = shortcutDtBase(steps, denoiseTimesteps);
  } catch (e) {
    throw new RangeError(`--num-steps: ${(e as Error).message}`);
  }
  return (x: Tensor, t: Tensor, y?: Tensor) => {
    const d = full([x.shape[0]!], k);
    return model instanceof nn.DiT
      ? model.forward(x, t, y, undefined, d)
      : model.forward(x, t, y, d);
  };
}

/**
 * Dispose every tensor of a recorded integration.
 *
 * @example
 * ```ts
 * import { buildModel, disposeRecorded, generateSamples } from "./_train_loop.ts";
 * const m = buildModel({ model: "velocity-mlp", hidden: 8, depth: 1, dataShape: [2], numClasses: 0, cfgDropout: 0, seed: 0 });
 * const g = await generateSamples(m, [2], { n: 2, sampler: "euler", steps: 3, seed: 0, record: true });
 * console.log(g.recorded!.trajectory!.length); // 4
 * disposeRecorded(g.recorded);
 * ```
 */
export function disposeRecorded(r: IntegrateResult | undefined): void {
  if (!r) return;
  r.x.dispose();
  r.trajectory?.forEach((t) => t.dispose());
}
