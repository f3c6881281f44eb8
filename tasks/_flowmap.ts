/**
 * @file Pieces shared by the flow-map tasks (`train:flowmap`, and the flow-map paths of
 * `sample` and `eval`): the model a `train:flowmap` config describes, and checkpoint loading
 * that rejects any other checkpoint with a `RangeError` naming it.
 * @module
 */
import {
  type Checkpoint,
  CheckpointError,
  FileFormatError,
  type FlowMapFn,
  flowMapKLTable,
  type FlowMapMethod,
  Generator,
  loadCheckpoint,
  nn,
  type PsdMode,
  sampleToy,
  type Tensor,
} from "../mod.ts";
import { scatterPanels } from "../viz/mod.ts";

/** The `task` of a flow-map run's config. */
export const FLOWMAP_TASK = "train:flowmap";

/** What the flow-map network needs from a run's configuration. */
export interface FlowMapModelConfig {
  /** Always {@linkcode FLOWMAP_TASK}. */
  task: typeof FLOWMAP_TASK;
  /** Self-distillation objective the run trained with. */
  method: FlowMapMethod;
  /** PSD split (PSD runs). */
  psdMode: PsdMode;
  /** Training data. */
  dataset: string;
  /** Shape of one sample ([2]). */
  dataShape: number[];
  /** Hidden width. */
  hidden: number;
  /** Hidden layers. */
  depth: number;
  /** Hidden activation. */
  activation: "silu" | "gelu" | "relu" | "tanh";
  /** Seed; the network is initialised from `seed + 1`. */
  seed: number;
}

/**
 * Build the FlowMapMLP a config describes (fresh initialisation from `seed + 1`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildFlowMapModel } from "./_flowmap.ts";
 * const m = buildFlowMapModel({ task: "train:flowmap", method: "lsd", psdMode: "midpoint", dataset: "checkerboard", dataShape: [2], hidden: 8, depth: 2, activation: "silu", seed: 0 });
 * assert.equal(m.numParameters(), 4 * 8 + 8 + 8 * 8 + 8 + 8 * 2 + 2);
 * ```
 */
export function buildFlowMapModel(c: FlowMapModelConfig): nn.FlowMapMLP {
  if (c.dataShape.length !== 1) {
    throw new RangeError(
      `A flow-map MLP needs flat samples but the data have shape [${c.dataShape}]`,
    );
  }
  return new nn.FlowMapMLP({
    dim: c.dataShape[0]!,
    hidden: c.hidden,
    depth: c.depth,
    activation: c.activation,
    seed: c.seed + 1,
  });
}

/**
 * The flow-map function φ(x, s, t) of a model, as the library's samplers take it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randn, zeros } from "../mod.ts";
 * import { buildFlowMapModel, flowMapOf } from "./_flowmap.ts";
 * const m = buildFlowMapModel({ task: "train:flowmap", method: "lsd", psdMode: "midpoint", dataset: "checkerboard", dataShape: [2], hidden: 8, depth: 1, activation: "silu", seed: 0 });
 * assert.deepEqual(flowMapOf(m)(randn([3, 2], { seed: 1 }), zeros([3]), zeros([3])).shape, [3, 2]);
 * ```
 */
export function flowMapOf(model: nn.FlowMapMLP): FlowMapFn {
  return (x: Tensor, s: Tensor, t: Tensor) => model.forward(x, s, t);
}

/** A flow-map checkpoint and where it came from. */
export interface LoadedFlowMap {
  /** The checkpoint file (or URL) read. */
  path: string;
  /** Its run directory, when it sits in one (else null). */
  runDir: string | null;
  /** The checkpoint. */
  checkpoint: Checkpoint;
  /** Its `train:flowmap` configuration. */
  config: FlowMapModelConfig & Record<string, unknown>;
}

async function stat(p: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(p);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Where a `--checkpoint` points: a file, a run directory (its `checkpoints/last.safetensors`)
 * or an http(s) URL; plus the run directory the file belongs to.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { locateCheckpoint } from "./_flowmap.ts";
 * await assert.rejects(locateCheckpoint("no/such/run"), /no\/such\/run: no such file/);
 * ```
 */
export async function locateCheckpoint(
  spec: string,
): Promise<{ path: string; runDir: string | null }> {
  if (typeof spec !== "string" || spec === "") {
    throw new RangeError("Expected --checkpoint to be a file, run directory or URL");
  }
  if (/^https?:\/\//.test(spec)) return { path: spec, runDir: null };
  const st = await stat(spec);
  if (!st) throw new RangeError(`--checkpoint ${spec}: no such file or directory`);
  if (st.isDirectory) {
    const dir = spec.replace(/\/+$/, "");
    for (
      const [p, run] of [[`${dir}/checkpoints/last.safetensors`, dir], [
        `${dir}/last.safetensors`,
        null,
      ]]
    ) {
      if ((await stat(p!))?.isFile) return { path: p!, runDir: run ?? null };
    }
    throw new RangeError(
      `--checkpoint ${spec}: a directory without checkpoints/last.safetensors (expected a run directory or a .safetensors file)`,
    );
  }
  const m = /^(.*?)\/?checkpoints\/[^/]+$/.exec(spec);
  const cand = m ? (m[1] || ".") : null;
  const runDir = cand !== null && (await stat(`${cand}/config.json`))?.isFile ? cand : null;
  return { path: spec, runDir };
}

async function readCheckpoint(path: string): Promise<Checkpoint> {
  try {
    return await loadCheckpoint(path);
  } catch (e) {
    if (e instanceof CheckpointError || e instanceof FileFormatError) {
      throw new RangeError(`--checkpoint ${path}: ${e.message.replace(`${path}: `, "")}`);
    }
    throw new RangeError(`--checkpoint ${path}: cannot be read (${(e as Error).message})`);
  }
}

/**
 * Load a `train:flowmap` checkpoint; anything else (a `train:cfm` checkpoint, a foreign file)
 * raises a `RangeError` naming the path and what its config says.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadFlowMapCheckpoint } from "./_flowmap.ts";
 * await assert.rejects(loadFlowMapCheckpoint("missing.safetensors"), RangeError);
 * ```
 */
export async function loadFlowMapCheckpoint(spec: string): Promise<LoadedFlowMap> {
  const { path, runDir } = await locateCheckpoint(spec);
  const checkpoint = await readCheckpoint(path);
  const cfg = checkpoint.config as Record<string, unknown> | undefined;
  if (!cfg || cfg.task !== FLOWMAP_TASK) {
    throw new RangeError(
      `--checkpoint ${path}: not a flow-map checkpoint (its config has task ${
        JSON.stringify(cfg?.task ?? null)
      }, expected "${FLOWMAP_TASK}")`,
    );
  }
  if (!Array.isArray(cfg.dataShape) || typeof cfg.hidden !== "number") {
    throw new RangeError(`--checkpoint ${path}: its ${FLOWMAP_TASK} config lacks dataShape/hidden`);
  }
  return { path, runDir, checkpoint, config: cfg as LoadedFlowMap["config"] };
}

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
export async function flowMapCheckpointIn(argv: readonly string[]): Promise<LoadedFlowMap | null> {
  let spec: string | undefined;
  argv.forEach((a, i) => {
    if (a === "--checkpoint") spec = argv[i + 1];
    else if (a.startsWith("--checkpoint=")) spec = a.slice("--checkpoint=".length);
  });
  if (spec === undefined) return null;
  try {
    return await loadFlowMapCheckpoint(spec);
  } catch {
    return null;
  }
}

/**
 * Build the model of a loaded flow-map checkpoint with its EMA (when present and asked for)
 * or raw weights, in eval mode.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildFlowMapModel, flowMapModelFromCheckpoint } from "./_flowmap.ts";
 * const config = { task: "train:flowmap" as const, method: "lsd" as const, psdMode: "midpoint" as const, dataset: "checkerboard", dataShape: [2], hidden: 8, depth: 1, activation: "silu" as const, seed: 0 };
 * const src = buildFlowMapModel(config);
 * const m = flowMapModelFromCheckpoint({ path: "mem", runDir: null, config, checkpoint: { model: src.stateDict(), step: 0 } });
 * assert.equal(m.numParameters(), src.numParameters());
 * ```
 */
export function flowMapModelFromCheckpoint(ck: LoadedFlowMap, useEma = true): nn.FlowMapMLP {
  const model = buildFlowMapModel(ck.config);
  const weights = useEma && ck.checkpoint.ema
    ? { ...ck.checkpoint.model, ...ck.checkpoint.ema }
    : ck.checkpoint.model;
  try {
    model.loadStateDict(weights);
  } catch (e) {
    model.dispose();
    throw new RangeError(
      `--checkpoint ${ck.path}: weights do not fit the flow-map MLP its config describes (${
        (e as Error).message
      })`,
    );
  }
  model.eval();
  return model;
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
  /** Also render target and samples per N as a PNG (first 20k points each). */
  plot?: string;
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
 * import { buildFlowMapModel, flowMapKLReport, flowMapOf } from "./_flowmap.ts";
 * const m = buildFlowMapModel({ task: "train:flowmap", method: "lsd", psdMode: "midpoint", dataset: "checkerboard", dataShape: [2], hidden: 8, depth: 1, activation: "silu", seed: 0 });
 * const r = await flowMapKLReport(flowMapOf(m), { dataset: "checkerboard", numSamples: 500, steps: [1, 2], seed: 0 });
 * assert.deepEqual(Object.keys(r.kl), ["1", "2"]);
 * assert.match(r.table, /\| 2 \| \d\.\d{4} \|/);
 * ```
 */
export async function flowMapKLReport(phi: FlowMapFn, o: KLReportOptions): Promise<KLReport> {
  const ref = sampleToy(o.dataset, o.numSamples, new Generator(o.seed + 1000003));
  const target = await ref.data();
  ref.dispose();
  const r = o.range ?? 2.5;
  const rows = await flowMapKLTable(phi, target, {
    steps: o.steps,
    numSamples: o.numSamples,
    bins: o.bins ?? 60,
    range: [-r, r],
    seed: o.seed,
    batch: o.batch,
    keepSamples: o.plot !== undefined,
  });
  const kl = Object.fromEntries(rows.map((x) => [String(x.steps), x.kl]));
  const table = [
    "| N | KL |",
    "|---|---|",
    ...rows.map((x) => `| ${x.steps} | ${x.kl.toFixed(4)} |`),
  ]
    .join("\n");
  if (o.plot === undefined) return { kl, table };
  const m = 2 * Math.min(o.numSamples, 20000);
  const png = await scatterPanels([
    { points: target.subarray(0, m), title: `data (${o.dataset})` },
    ...rows.map((x) => ({
      points: x.samples!.subarray(0, m),
      title: `N=${x.steps} KL ${x.kl.toFixed(3)}`,
    })),
  ], { range: r, title: o.plot });
  return { kl, table, png };
}
