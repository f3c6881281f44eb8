/**
 * @file The flow-map trainer of `train:flowmap` (seed 004, Boffi et al. 2025): the
 * FlowMapMLP a run's config describes, a `fit` trainer with the diagonal loss plus LSD, PSD or
 * ESD (teachers with the current parameters, detached), and reading flow-map checkpoints
 * (a `train:cfm` or foreign checkpoint is a `RangeError` naming it). Used by the
 * `train:flowmap` task and the flow-map paths of `sample` and `eval`.
 * @module
 */
import { checkStepFits, mlpStepSize } from "./budget.ts";
import { denoApi, isNotFound } from "../_util.ts";
import type { Tensor } from "../tensor.ts";
import * as nn from "../nn/mod.ts";
import { AdamW, EMA } from "../optim/mod.ts";
import { sampleToy } from "../data/mod.ts";
import { type FlowMapFn, flowMapLoss, type FlowMapMethod, type PsdMode } from "../flow/flowmap.ts";
import { type Checkpoint, CheckpointError, FileFormatError, loadCheckpoint } from "../io/mod.ts";
import type { StepContext, Trainer } from "./fit.ts";

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
 * import { buildFlowMapModel } from "../../mod.ts";
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
 * import { buildFlowMapModel, flowMapOf, randn, zeros } from "../../mod.ts";
 * const m = buildFlowMapModel({ task: "train:flowmap", method: "lsd", psdMode: "midpoint", dataset: "checkerboard", dataShape: [2], hidden: 8, depth: 1, activation: "silu", seed: 0 });
 * assert.deepEqual(flowMapOf(m)(randn([3, 2], { seed: 1 }), zeros([3]), zeros([3])).shape, [3, 2]);
 * ```
 */
export function flowMapOf(model: nn.FlowMapMLP): FlowMapFn {
  return (x: Tensor, s: Tensor, t: Tensor) => model.forward(x, s, t);
}

/** A flow-map checkpoint and where it came from. */
export interface LoadedFlowMapCheckpoint {
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
    return await denoApi("Reading a flow-map checkpoint", "pass its bytes").stat(p);
  } catch (e) {
    if (isNotFound(e)) return null;
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
 * import { locateFlowMapCheckpoint } from "../../mod.ts";
 * await assert.rejects(locateFlowMapCheckpoint("no/such/run"), /no\/such\/run: no such file/);
 * ```
 */
export async function locateFlowMapCheckpoint(
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
 * import { readFlowMapCheckpoint } from "../../mod.ts";
 * await assert.rejects(readFlowMapCheckpoint("missing.safetensors"), RangeError);
 * ```
 */
export async function readFlowMapCheckpoint(spec: string): Promise<LoadedFlowMapCheckpoint> {
  const { path, runDir } = await locateFlowMapCheckpoint(spec);
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
  return { path, runDir, checkpoint, config: cfg as LoadedFlowMapCheckpoint["config"] };
}

/**
 * Build the model of a loaded flow-map checkpoint with its EMA (when present and asked for)
 * or raw weights, in eval mode.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildFlowMapModel, flowMapModelFromCheckpoint } from "../../mod.ts";
 * const config = { task: "train:flowmap" as const, method: "lsd" as const, psdMode: "midpoint" as const, dataset: "checkerboard", dataShape: [2], hidden: 8, depth: 1, activation: "silu" as const, seed: 0 };
 * const src = buildFlowMapModel(config);
 * const m = flowMapModelFromCheckpoint({ path: "mem", runDir: null, config, checkpoint: { model: src.stateDict(), step: 0 } });
 * assert.equal(m.numParameters(), src.numParameters());
 * ```
 */
export function flowMapModelFromCheckpoint(
  ck: LoadedFlowMapCheckpoint,
  useEma = true,
): nn.FlowMapMLP {
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

/** Settings of {@linkcode flowMapTrainer} (a subset of the `train:flowmap` config). */
export interface FlowMapTrainerConfig extends FlowMapModelConfig {
  /** Rows per step (diagonal and off-diagonal). */
  batchSize: number;
  /** Rows given the diagonal loss. */
  diagonalRows: number;
  /** Weight of the self-distillation term. */
  offDiagonalWeight: number;
  /** AdamW learning rate. */
  lr: number;
  /** AdamW (decoupled) weight decay. */
  weightDecay: number;
  /** EMA decay (0: no EMA). */
  emaDecay: number;
}

/** A flow-map trainer; `phi` is the student network as a flow-map function. */
export interface FlowMapTrainer extends Trainer<nn.FlowMapMLP> {
  /** φ(x, s, t) of the model (samples and evaluation use it). */
  readonly phi: FlowMapFn;
}

/**
 * A `fit` trainer for flow maps: each step draws `batchSize` rows of the toy (from the run's
 * generator), gives the first `diagonalRows` the diagonal loss and the rest the chosen
 * self-distillation loss, with `FlowMapMLP.teacher` (current weights, detached) as the
 * teacher. Logs `training/loss_diagonal` and `training/loss_<method>` beside the total.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createRun, fit, flowMapTrainer } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const cfg = { task: "train:flowmap" as const, method: "psd" as const, psdMode: "midpoint" as const,
 *   dataset: "checkerboard", dataShape: [2], hidden: 16, depth: 2, activation: "silu" as const, seed: 0,
 *   batchSize: 32, diagonalRows: 24, offDiagonalWeight: 1, lr: 1e-3, weightDecay: 1e-4, emaDecay: 0 };
 * const trainer = flowMapTrainer(cfg);
 * const run = await createRun("train:flowmap", { outputDir: dir, config: cfg });
 * const r = await fit(trainer, { run, maxSteps: 4, logEvery: 2, progress: false });
 * assert.ok(Number.isFinite(r.lastMetrics!["training/loss_psd_midpoint"]));
 * trainer.model.dispose(); trainer.optimizer.dispose();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function flowMapTrainer(c: FlowMapTrainerConfig): FlowMapTrainer {
  const width = c.dataShape.reduce((a, b) => a * b, 1);
  checkStepFits(
    (k) =>
      mlpStepSize({ hidden: k["--hidden"]!, depth: c.depth, width, batch: k["--batch-size"]! }),
    { "--hidden": c.hidden, "--batch-size": c.batchSize },
  );
  const model = buildFlowMapModel(c);
  const phi = flowMapOf(model);
  const teacher = (x: Tensor, s: Tensor, t: Tensor) => model.teacher(x, s, t);
  const offName = c.method === "psd"
    ? `training/loss_psd_${c.psdMode}`
    : `training/loss_${c.method}`;
  let x1: Tensor | null = null;
  return {
    model,
    phi,
    optimizer: new AdamW({ lr: c.lr, weightDecay: c.weightDecay }),
    ema: c.emaDecay > 0 ? new EMA(model, { decay: c.emaDecay }) : undefined,
    prepare(ctx: StepContext<nn.FlowMapMLP>) {
      x1 = ctx.track(sampleToy(c.dataset, c.batchSize, ctx.generator));
    },
    loss(ctx: StepContext<nn.FlowMapMLP>) {
      const r = flowMapLoss(phi, x1!, {
        method: c.method,
        psdMode: c.psdMode,
        diagonalRows: c.diagonalRows,
        offDiagonalWeight: c.offDiagonalWeight,
        generator: ctx.generator,
        teacher,
      });
      const metrics: Record<string, Tensor> = {};
      if (r.diagonal) metrics["training/loss_diagonal"] = r.diagonal;
      if (r.offDiagonal) metrics[offName] = r.offDiagonal;
      return { loss: r.loss, metrics };
    },
  };
}
