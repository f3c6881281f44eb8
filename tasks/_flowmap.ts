/**
 * @file Pieces shared by the flow-map tasks (`train:flowmap`, and the flow-map paths of
 * `sample` and `eval`): finding a flow-map checkpoint among the arguments, and seed 004's KL
 * report with its figure.
 * @module
 */
import {
  type FlowMapFn,
  flowMapKLTable,
  Generator,
  type LoadedFlowMapCheckpoint,
  Progress,
  type ProgressOptions,
  readFlowMapCheckpoint,
  sampleToy,
} from "../mod.ts";
import { scatterPanels } from "../viz/mod.ts";

/**
 * The flow-map checkpoint `--checkpoint` in `argv` names, or null when it names something else
 * (`sample` and `eval` hand flow-map checkpoints to their flow-map variants). Missing or
 * unreadable checkpoints answer null and are left to the caller's own error.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { flowMapCheckpointIn } from "./_flowmap.ts";
 * assert.equal(await flowMapCheckpointIn(["--checkpoint", "no/such/file"]), null);
 * ```
 */
export async function flowMapCheckpointIn(
  argv: readonly string[],
): Promise<LoadedFlowMapCheckpoint | null> {
  let spec: string | undefined;
  argv.forEach((a, i) => {
    if (a === "--checkpoint") spec = argv[i + 1];
    else if (a.startsWith("--checkpoint=")) spec = a.slice("--checkpoint=".length);
  });
  if (spec === undefined) return null;
  try {
    return await readFlowMapCheckpoint(spec);
  } catch {
    return null;
  }
}

/** Options of {@linkcode flowMapKLReport}. */
export interface KLReportOptions {
  /** Target toy (fresh samples from `seed + 1000003`). */
  dataset: string;
  /** Model and target samples. */
  numSamples: number;
  /** Step counts N (default 1, 2, 4, 8, 16). */
  steps?: readonly number[];
  /** Bins per axis (default 60). */
  bins?: number;
  /** Bins cover [−r, r]² (default 2.5). */
  range?: number;
  /** Seed of the noise and (offset) of the target data. */
  seed: number;
  /** Rows per map evaluation. */
  batch?: number;
  /** Also render target and samples per N as a PNG titled this (first 5000 points each). */
  plot?: string;
  /** Progress options (to stderr by default), or false for none. */
  progress?: ProgressOptions | false;
}

/** What {@linkcode flowMapKLReport} returns. */
export interface KLReport {
  /** KL(target ‖ model) by N. */
  kl: Record<string, number>;
  /** A markdown table of it. */
  table: string;
  /** The PNG, when `plot` (its title) was given. */
  png?: Uint8Array;
}

/**
 * Seed 004's evaluation of a flow map: histogram KL at several N against fresh target data,
 * as numbers, a markdown table, and optionally a figure.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildFlowMapModel, flowMapOf } from "../mod.ts";
 * import { flowMapKLReport } from "./_flowmap.ts";
 * const m = buildFlowMapModel({ task: "train:flowmap", method: "lsd", psdMode: "midpoint", dataset: "checkerboard", dataShape: [2], hidden: 8, depth: 1, activation: "silu", seed: 0 });
 * const lines: string[] = [];
 * const r = await flowMapKLReport(flowMapOf(m), {
 *   dataset: "checkerboard", numSamples: 500, steps: [1, 2], seed: 0,
 *   progress: { tty: false, write: (s) => lines.push(s) },
 * });
 * assert.match(lines[0]!, /^eval kl start 0\/3: N = 1, 2 on 500 samples/);
 * assert.match(lines[2]!, /^eval kl map-eval 3\/3 kl@N=2 \S+ [\d.]+ it\/s eta 0s/);
 * assert.deepEqual(Object.keys(r.kl), ["1", "2"]);
 * assert.match(r.table, /\| 2 \| \d+\.\d{4} \|/);
 * ```
 */
export async function flowMapKLReport(phi: FlowMapFn, o: KLReportOptions): Promise<KLReport> {
  const ref = sampleToy(o.dataset, o.numSamples, new Generator(o.seed + 1000003));
  const target = await ref.data();
  ref.dispose();
  const r = o.range ?? 2.5;
  const steps = o.steps ?? [1, 2, 4, 8, 16];
  const total = steps.reduce((a, b) => a + b, 0);
  let progress: Progress | undefined;
  const rows = await flowMapKLTable(phi, target, {
    steps,
    numSamples: o.numSamples,
    bins: o.bins ?? 60,
    range: [-r, r],
    seed: o.seed,
    batch: o.batch,
    keepSamples: o.plot !== undefined,
    // Progress in map evaluations per sample (N for each row), so the ETA weighs large N.
    onRow: (done, next) => {
      if (o.progress === false) return;
      const evals = done.reduce((a, x) => a + x.steps, 0), last = done[done.length - 1];
      if (done.length === 0) {
        progress = new Progress(total, {
          label: "eval kl",
          unit: "map-eval",
          every: 1,
          ...o.progress,
        });
        progress.start(`N = ${steps.join(", ")} on ${o.numSamples} samples; N = ${next} first`);
      } else {
        progress!.update(evals, {
          [`kl@N=${last!.steps}`]: last!.kl,
          ...(next ? { next: `N=${next}` } : {}),
        });
      }
      if (next === null) progress!.done();
    },
  });
  const kl = Object.fromEntries(rows.map((x) => [String(x.steps), x.kl]));
  const table = [
    "| N | KL |",
    "|---|---|",
    ...rows.map((x) => `| ${x.steps} | ${x.kl.toFixed(4)} |`),
  ]
    .join("\n");
  if (o.plot === undefined) return { kl, table };
  const m = 2 * Math.min(o.numSamples, 5000);
  const png = await scatterPanels([
    { points: target.subarray(0, m), title: `data (${o.dataset})` },
    ...rows.map((x) => ({
      points: x.samples!.subarray(0, m),
      title: `N=${x.steps} KL ${x.kl.toFixed(3)}`,
    })),
  ], { range: r, title: o.plot });
  return { kl, table, png };
}
