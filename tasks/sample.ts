/**
 * @file `deno task sample` — draw samples from a `train:cfm` checkpoint (file, run directory
 * or http(s) URL) with any sampler, optional classifier-free guidance, and write them to
 * `--out`: `.png` (a scatter plot for 2-D data, an image grid for images) or `.npz`
 * (`arr_0` uint8 [N, H, W, 3] for images, as the ADM evaluation suite reads; float `x`
 * [N, 2] for 2-D data). Reads nothing but the checkpoint (and, for a latent run trained with
 * `train:cfm --latents`, the autoencoder its config records, whose decoder turns the sampled
 * codes into images) and writes nothing but `--out`, so the standalone sampler binary is
 * compiled from this file.
 *
 *   deno task sample --checkpoint runs/train-cfm-20260101-120000 --out samples.png
 *   deno task sample --checkpoint ckpt.safetensors --sampler dopri5 --out x.npz
 *   deno task sample --checkpoint fm-run --class-grid --samples-per-class 8 --cfg-scale 2 --out grid.png
 * @module
 */
import {
  cfmModelFromCheckpoint,
  Generator,
  Progress,
  readCfmCheckpoint,
  sampleCfmModel,
  SAMPLER_METHODS,
  type SamplerMethod,
  samplesAsData,
} from "../mod.ts";
import { type FlagSpec, parseTaskFlags, runTask } from "../cli/mod.ts";
import { flowMapCheckpointIn } from "./_flowmap.ts";
import { main as sampleFlowMap } from "./sample_flowmap.ts";
import { samplerOf, writeSamples } from "./_sample_out.ts";

export { samplerOf } from "./_sample_out.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { SAMPLE_FLAGS } from "./sample.ts";
 * assert.equal(SAMPLE_FLAGS.find((f) => f.name === "sampler")?.default, "euler");
 * ```
 */
export const SAMPLE_FLAGS = [
  { name: "checkpoint", type: "string", help: "checkpoint file, run directory or http(s) URL" },
  { name: "num-samples", type: "int", default: 1000, min: 1, help: "samples to draw" },
  {
    name: "sampler",
    type: "choice",
    choices: SAMPLER_METHODS,
    default: "euler",
    help: "ODE/SDE sampler",
  },
  { name: "num-steps", type: "int", default: 100, min: 1, help: "fixed-step sampler steps" },
  { name: "atol", type: "number", default: 1e-5, min: 0, help: "dopri5 absolute tolerance" },
  { name: "rtol", type: "number", default: 1e-5, min: 0, help: "dopri5 relative tolerance" },
  {
    name: "cfg-scale",
    type: "number",
    min: 0,
    help: "classifier-free guidance scale (default 3 for class-conditional images, else 1)",
  },
  {
    name: "mode",
    type: "choice",
    choices: ["ode", "sde"],
    default: "ode",
    help: "ode: --sampler; sde: Euler–Maruyama (REPA's --mode sde)",
  },
  {
    name: "guidance-low",
    type: "number",
    default: 0,
    min: 0,
    max: 1,
    help: "guide only for t >= this (t = 1 is data)",
  },
  {
    name: "guidance-high",
    type: "number",
    default: 1,
    min: 0,
    max: 1,
    help: "guide only for t <= this",
  },
  { name: "class-label", type: "int", min: 0, help: "sample this class only" },
  { name: "class-grid", type: "bool", help: "one row per class (overrides --num-samples)" },
  { name: "samples-per-class", type: "int", default: 8, min: 1, help: "with --class-grid" },
  {
    name: "upscale",
    type: "int",
    default: 3,
    min: 1,
    max: 16,
    help: "class-grid PNG: pixel scale, with class names (1: raw pixels, no names)",
  },
  { name: "use-ema", type: "bool", default: true, help: "sample with the EMA weights" },
  { name: "seed", type: "int", default: 0, min: 0, help: "seed of the noise" },
  { name: "batch-size", type: "int", default: 256, min: 1, help: "samples per integration batch" },
  { name: "out", type: "string", default: "runs/samples.png", help: "output file: .png or .npz" },
] as const satisfies readonly FlagSpec[];

/** What `main` returns. */
export interface SampleResult {
  /** The file written. */
  out: string;
  /** Samples drawn. */
  n: number;
  /** Shape of one sample. */
  shape: number[];
  /** Velocity evaluations per batch. */
  nfe: number;
  /** The checkpoint actually read. */
  checkpoint: string;
  /** The guidance scale used (3 by default for class-conditional images, else 1; absent for a
   * flow-map checkpoint). */
  cfgScale?: number;
  /** The sampler used (`--mode sde` is Euler–Maruyama; absent for a flow-map checkpoint). */
  sampler?: SamplerMethod;
}

/**
 * Run the task (or `null` for `--help`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./sample.ts";
 * assert.equal(await main(["--help"]), null); // after printing the usage
 * ```
 */
export async function main(argv: readonly string[]): Promise<SampleResult | null> {
  // A train:flowmap checkpoint samples by composing its map (tasks/sample_flowmap.ts).
  const fm = await flowMapCheckpointIn(argv);
  if (fm) return await sampleFlowMap(argv, fm);
  const f = parseTaskFlags(argv, SAMPLE_FLAGS, {
    task: "sample",
    usage: "Draw samples from a train:cfm checkpoint and write them as PNG or NPZ.",
  });
  if (!f) return null;
  if (f.checkpoint === undefined) {
    throw new RangeError("Expected --checkpoint (a checkpoint file, run directory or URL)");
  }
  const ext = /\.(png|npz)$/i.exec(f.out)?.[1]?.toLowerCase();
  if (!ext) throw new RangeError(`Expected --out to end in .png or .npz but found "${f.out}"`);
  if (f.guidanceHigh < f.guidanceLow) {
    throw new RangeError(
      `Expected --guidance-high (${f.guidanceHigh}) >= --guidance-low (${f.guidanceLow})`,
    );
  }
  const sampler = samplerOf(f.mode, f.sampler, argv);
  if (argv.some((a) => /^--upscale(=|$)/.test(a)) && !(f.classGrid && ext === "png")) {
    throw new RangeError("--upscale scales a --class-grid PNG; it does nothing here: drop it");
  }
  const ck = await readCfmCheckpoint(f.checkpoint);
  const C = ck.config.numClasses ?? 0;
  // Class-conditional image models are sampled guided unless told otherwise (issue 14: CFG
  // 2–4 by default; 3 is where train:images measured its class agreement).
  const images = ck.config.dataset === "fashion-mnist" || ck.config.dataShape.length === 3;
  const cfgScale = f.cfgScale ?? (C > 0 && images ? 3 : 1);
  const wantsLabels = f.classGrid || f.classLabel !== undefined || f.cfgScale !== undefined;
  if (C === 0 && wantsLabels) {
    throw new RangeError(
      `--class-label, --class-grid and --cfg-scale need a class-conditional model, but ` +
        `${ck.path} is unconditional (dataset ${ck.config.dataset})`,
    );
  }
  if (f.classLabel !== undefined && f.classLabel >= C) {
    throw new RangeError(`Expected --class-label in [0, ${C - 1}] but found ${f.classLabel}`);
  }
  let n = f.numSamples;
  let labels: Float32Array | undefined;
  if (f.classGrid) {
    n = C * f.samplesPerClass;
    labels = Float32Array.from({ length: n }, (_, i) => Math.floor(i / f.samplesPerClass));
  } else if (f.classLabel !== undefined) labels = new Float32Array(n).fill(f.classLabel);
  else if (C > 0 && cfgScale !== 1) {
    // Guidance needs a class: draw them uniformly from their own stream.
    const u = new Generator(f.seed + 1).uniformHost(n);
    labels = Float32Array.from(u, (v) => Math.min(C - 1, Math.floor(v * C)));
  }
  // A latent run's decoder is opened (and checked) before the sampling it would waste.
  await samplesAsData(ck.config, new Float32Array(0));
  const model = cfmModelFromCheckpoint(ck, f.useEma);
  const progress = new Progress(n, { label: "sample", unit: "sample", every: 1 });
  const nb = Math.ceil(n / f.batchSize);
  progress.start(
    `${sampler}, ${nb} batch${nb > 1 ? "es" : ""}; the first compiles the pipelines`,
  );
  let g;
  try {
    g = await sampleCfmModel(model, ck.config.dataShape, {
      n,
      sampler,
      steps: f.numSteps,
      seed: f.seed,
      atol: f.atol,
      rtol: f.rtol,
      labels,
      cfgScale,
      guidanceLow: f.guidanceLow,
      guidanceHigh: f.guidanceHigh,
      batch: f.batchSize,
      denoiseTimesteps: ck.config.denoiseTimesteps,
      onBatch: (done) => progress.update(done),
    });
    progress.done({ nfe: g.nfe });
  } finally {
    model.dispose();
  }
  // A latent run's samples are codes: decoded to images by its autoencoder.
  const { x, shape } = await samplesAsData(ck.config, g.x);
  await writeSamples(f.out, x, shape, {
    n,
    dataset: ck.config.dataset,
    numClasses: C,
    labels,
    classGridCols: f.classGrid ? f.samplesPerClass : undefined,
    upscale: f.upscale,
    title: `${ck.config.dataset}: ${sampler}${
      sampler === "dopri5" ? "" : ` ${f.numSteps}`
    }, NFE ${g.nfe}`,
  });
  console.log(`sample: ${n} samples of [${shape}] with ${sampler}, NFE ${g.nfe} -> ${f.out}`);
  return { out: f.out, n, shape: [...shape], nfe: g.nfe, checkpoint: ck.path, cfgScale, sampler };
}

if (import.meta.main) await runTask("sample", main);
