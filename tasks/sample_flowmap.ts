/**
 * @file The flow-map path of `deno task sample`: a `train:flowmap` checkpoint is sampled by
 * composing its map N = `--num-steps` times on a uniform grid (N map evaluations), and the
 * samples are written to `--out` as a `.png` scatter plot or an `.npz` (float `x` [n, 2]).
 * `tasks/sample.ts` hands flow-map checkpoints here; this file also runs on its own.
 *
 *   deno task sample --checkpoint /tmp/flowmap-runs/lsd-seed0 --num-steps 4 --out x.png
 *   deno task sample --checkpoint run/checkpoints/last.safetensors --num-steps 1 --out x.npz
 * @module
 */
import {
  atomicWrite,
  flowMapModelFromCheckpoint,
  flowMapOf,
  flowMapSamples,
  type LoadedFlowMapCheckpoint,
  readFlowMapCheckpoint,
  saveNpz,
} from "../mod.ts";
import { scatterPlot } from "../viz/mod.ts";
import { type FlagSpec, parseTaskFlags, runTask } from "../cli/mod.ts";

/**
 * The flags.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { SAMPLE_FLOWMAP_FLAGS } from "./sample_flowmap.ts";
 * assert.equal(SAMPLE_FLOWMAP_FLAGS.find((f) => f.name === "num-steps")?.default, 1);
 * ```
 */
export const SAMPLE_FLOWMAP_FLAGS = [
  { name: "checkpoint", type: "string", help: "flow-map checkpoint file, run directory or URL" },
  { name: "num-samples", type: "int", default: 1000, min: 1, help: "samples to draw" },
  { name: "num-steps", type: "int", default: 1, min: 1, help: "map evaluations N (1: one step)" },
  { name: "use-ema", type: "bool", default: true, help: "use the EMA weights when present" },
  { name: "seed", type: "int", default: 0, min: 0, help: "seed of the noise" },
  { name: "batch-size", type: "int", default: 16384, min: 1, help: "rows per map evaluation" },
  { name: "out", type: "string", default: "runs/samples.png", help: "output file: .png or .npz" },
] as const satisfies readonly FlagSpec[];

/** What `main` returns (the fields of `sample`'s result). */
export interface SampleFlowMapResult {
  /** The file written. */
  out: string;
  /** Samples drawn. */
  n: number;
  /** Shape of one sample. */
  shape: number[];
  /** Map evaluations per sample. */
  nfe: number;
  /** The checkpoint read. */
  checkpoint: string;
}

/**
 * Run the task (or `null` for `--help`); `loaded` skips reading the checkpoint again.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./sample_flowmap.ts";
 * assert.equal(await main(["--help"]), null);
 * ```
 */
export async function main(
  argv: readonly string[],
  loaded?: LoadedFlowMapCheckpoint,
): Promise<SampleFlowMapResult | null> {
  const f = parseTaskFlags(argv, SAMPLE_FLOWMAP_FLAGS, {
    task: "sample (flow map)",
    usage: "Sample a train:flowmap checkpoint with N map evaluations; write PNG or NPZ.",
  });
  if (!f) return null;
  if (f.checkpoint === undefined) {
    throw new RangeError(
      "Expected --checkpoint (a flow-map checkpoint file, run directory or URL)",
    );
  }
  const ext = /\.(png|npz)$/i.exec(f.out)?.[1]?.toLowerCase();
  if (!ext) throw new RangeError(`Expected --out to end in .png or .npz but found "${f.out}"`);
  const ck = loaded ?? await readFlowMapCheckpoint(f.checkpoint);
  const shape = ck.config.dataShape;
  if (ext === "png" && (shape.length !== 1 || shape[0] !== 2)) {
    throw new RangeError(
      `A .png scatter needs 2-D samples but they have shape [${shape}]; use .npz`,
    );
  }
  const model = flowMapModelFromCheckpoint(ck, f.useEma);
  let x: Float32Array;
  try {
    x = await flowMapSamples(flowMapOf(model), f.numSamples, {
      shape,
      steps: f.numSteps,
      seed: f.seed,
      batch: f.batchSize,
    });
  } finally {
    model.dispose();
  }
  if (ext === "png") {
    const title = `${ck.config.dataset}: flow map (${ck.config.method}), N = ${f.numSteps}`;
    await atomicWrite(f.out, await scatterPlot(x, { title, range: 2.5 }));
  } else {
    await saveNpz(f.out, { x: { shape: [f.numSamples, ...shape], data: x } });
  }
  console.log(
    `sample: ${f.numSamples} samples of [${shape}] with ${f.numSteps} flow-map step(s) -> ${f.out}`,
  );
  return { out: f.out, n: f.numSamples, shape: [...shape], nfe: f.numSteps, checkpoint: ck.path };
}

if (import.meta.main) await runTask("sample", main);
