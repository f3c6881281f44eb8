/**
 * @file The flow-map path of `deno task eval`: seed 004's protocol on a `train:flowmap`
 * checkpoint — histogram KL(target ‖ model) with 60 bins on [−2.5, 2.5]² from 100k samples at
 * N = 1, 2, 4, 8, 16 map evaluations (the same noise for every N; fresh target data). Prints
 * the table and one JSON record; in a run directory it appends the record to `eval.jsonl`,
 * writes it to `eval_kl.json`, and (with `--plot`) writes `eval_kl.png`.
 * `tasks/eval.ts` hands flow-map checkpoints here; this file also runs on its own.
 *
 *   deno task eval --checkpoint /tmp/flowmap-runs/lsd-seed0 --metrics kl
 *   deno task eval --checkpoint run --metrics kl --num-steps 1,4 --num-samples 20000
 * @module
 */
import {
  flowMapModelFromCheckpoint,
  flowMapOf,
  type LoadedFlowMapCheckpoint,
  readFlowMapCheckpoint,
  snakeKeys,
} from "../mod.ts";
import { type FlagSpec, parseTaskFlags, runTask } from "../cli/mod.ts";
import { flowMapKLReport } from "./_flowmap.ts";

/**
 * The flags (seed 004's protocol by default).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { EVAL_FLOWMAP_FLAGS } from "./eval_flowmap.ts";
 * assert.equal(EVAL_FLOWMAP_FLAGS.find((f) => f.name === "num-samples")?.default, 100000);
 * ```
 */
export const EVAL_FLOWMAP_FLAGS = [
  { name: "checkpoint", type: "string", help: "flow-map checkpoint file, run directory or URL" },
  { name: "metrics", type: "string", default: "kl", help: "kl (the only flow-map metric)" },
  { name: "num-samples", type: "int", default: 100000, min: 2, help: "model and target samples" },
  {
    name: "num-steps",
    type: "string",
    default: "1,2,4,8,16",
    help: "comma-separated map evaluations N",
  },
  { name: "kl-bins", type: "int", default: 60, min: 1, help: "histogram bins per axis" },
  { name: "kl-range", type: "number", default: 2.5, min: 0, help: "bins cover [-r, r]^2" },
  { name: "use-ema", type: "bool", default: true, help: "use the EMA weights when present" },
  { name: "seed", type: "int", default: 0, min: 0, help: "seed of noise and target data" },
  { name: "batch-size", type: "int", default: 16384, min: 1, help: "rows per map evaluation" },
  { name: "plot", type: "bool", help: "write eval_kl.png (samples per N) to the run directory" },
] as const satisfies readonly FlagSpec[];

/**
 * Parse `--num-steps 1,2,4`; anything but integers >= 1 is a `RangeError` naming the value.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseStepList } from "./eval_flowmap.ts";
 * assert.deepEqual(parseStepList("1, 4,16"), [1, 4, 16]);
 * assert.throws(() => parseStepList("2,0"), /"0"/);
 * ```
 */
export function parseStepList(list: string): number[] {
  const parts = list.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (parts.length === 0) {
    throw new RangeError(`Expected --num-steps to list N >= 1 but found "${list}"`);
  }
  return parts.map((p) => {
    const n = Number(p);
    if (!/^\d+$/.test(p) || !Number.isInteger(n) || n < 1) {
      throw new RangeError(`Expected --num-steps to list integers N >= 1 but found "${p}"`);
    }
    return n;
  });
}

/** The record `main` prints and stores. */
export interface FlowMapEvalRecord {
  checkpoint: string;
  step: number;
  method: string;
  psdMode: string;
  dataset: string;
  numSamples: number;
  klBins: number;
  klRange: [number, number];
  seed: number;
  useEma: boolean;
  /** KL(target ‖ model) by N. */
  kl: Record<string, number>;
  /** Seconds spent sampling and binning. */
  seconds: number;
}

/**
 * Run the task (or `null` for `--help`); `loaded` skips reading the checkpoint again.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { main } from "./eval_flowmap.ts";
 * assert.equal(await main(["--help"]), null);
 * ```
 */
export async function main(
  argv: readonly string[],
  loaded?: LoadedFlowMapCheckpoint,
): Promise<FlowMapEvalRecord | null> {
  const f = parseTaskFlags(argv, EVAL_FLOWMAP_FLAGS, {
    task: "eval (flow map)",
    usage: "Histogram KL of a train:flowmap checkpoint at several step counts N (seed 004).",
  });
  if (!f) return null;
  if (f.checkpoint === undefined) {
    throw new RangeError(
      "Expected --checkpoint (a flow-map checkpoint file, run directory or URL)",
    );
  }
  const metrics = f.metrics.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const bad = metrics.find((m) => m !== "kl");
  if (bad !== undefined || metrics.length === 0) {
    throw new RangeError(
      `Flow-map checkpoints support --metrics kl but found "${bad ?? f.metrics}"`,
    );
  }
  const steps = parseStepList(f.numSteps);
  const ck = loaded ?? await readFlowMapCheckpoint(f.checkpoint);
  const shape = ck.config.dataShape;
  if (shape.length !== 1 || shape[0] !== 2) {
    throw new RangeError(`--metrics kl needs 2-D data but the samples have shape [${shape}]`);
  }
  const t0 = performance.now();
  const model = flowMapModelFromCheckpoint(ck, f.useEma);
  let report;
  try {
    report = await flowMapKLReport(flowMapOf(model), {
      dataset: ck.config.dataset,
      numSamples: f.numSamples,
      steps,
      bins: f.klBins,
      range: f.klRange,
      seed: f.seed,
      batch: f.batchSize,
      plot: f.plot && ck.runDir ? `${ck.config.method} step ${ck.checkpoint.step}` : undefined,
    });
  } finally {
    model.dispose();
  }
  const rec: FlowMapEvalRecord = {
    checkpoint: ck.path,
    step: ck.checkpoint.step,
    method: String(ck.config.method),
    psdMode: String(ck.config.psdMode),
    dataset: ck.config.dataset,
    numSamples: f.numSamples,
    klBins: f.klBins,
    klRange: [-f.klRange, f.klRange],
    seed: f.seed,
    useEma: f.useEma && ck.checkpoint.ema !== undefined,
    kl: report.kl,
    seconds: (performance.now() - t0) / 1000,
  };
  const label = rec.method === "psd" ? `psd-${rec.psdMode}` : rec.method;
  console.log(report.table.replace("| KL |", `| KL (${label}) |`));
  // The seeds' key spelling (snake_case) in the printed line and eval.jsonl.
  const line = JSON.stringify(snakeKeys(rec as unknown as Record<string, unknown>));
  console.log(line);
  if (ck.runDir) {
    try {
      await Deno.writeTextFile(`${ck.runDir}/eval.jsonl`, line + "\n", {
        append: true,
        create: true,
      });
      await Deno.writeTextFile(`${ck.runDir}/eval_kl.json`, JSON.stringify(rec, null, 2) + "\n");
      if (report.png) await Deno.writeFile(`${ck.runDir}/eval_kl.png`, report.png);
    } catch (e) {
      // The record is already printed; a read-only run directory only loses the files.
      console.warn(`eval: could not write to ${ck.runDir}: ${(e as Error).message}`);
    }
  }
  return rec;
}

if (import.meta.main) await runTask("eval", main);
