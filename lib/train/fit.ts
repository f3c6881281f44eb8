/**
 * @file `fit`: the one training loop every trainer uses. A trainer says what one step
 * computes (`prepare` host work, then a differentiable `loss`); the loop owns everything
 * around it: resume (bit-exact on the CPU backend: weights, EMA, optimizer, every random
 * stream, trainer state such as a memory bank, and the partly filled logging window),
 * gradient accumulation and clipping, the learning-rate schedule, EMA, NaN/Inf detection
 * without per-step readbacks, metrics (`training/loss_flow`, `training/grad_norm`,
 * `training/lr` plus the trainer's own), checkpoints, periodic samples with the EMA weights,
 * progress, stale temporary files and the run-directory lock.
 *
 * Step numbers are 1-based: step s is the s-th optimizer update, and its metrics,
 * checkpoint (`step-00000s.safetensors`) and samples carry s.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { globalNorm, mul } from "../ops/mod.ts";
import { valueAndGrad } from "../autodiff/mod.ts";
import { Generator } from "../random.ts";
import type { Module } from "../nn/mod.ts";
import { clipGradNorm, type EMA, type LrSchedule, type Optimizer } from "../optim/mod.ts";
import type { HostArray, ProgressOptions, Run } from "../io/mod.ts";
import { configFileText, Progress } from "../io/mod.ts";
import { checkInt, checkNumber, denoApi, isNotFound } from "../_util.ts";
import { lockRunDir, removeStaleTemps } from "./lock.ts";
import { MetricWindow, type NonFinite } from "./window.ts";
import { restoreCheckpoint, saveTrainingCheckpoint, streamsOf } from "./state.ts";
import { type StepMode, StepTracer } from "./trace.ts";
import { captureHooks } from "../capture.ts";

/** Metric values a step reports: device scalars (never read per step) or host numbers. */
export type StepMetrics = Record<string, Tensor | number>;

/** What `Trainer.loss` returns. */
export interface LossOutput {
  /** The scalar to minimise (differentiated with respect to the trainer's parameters). */
  loss: Tensor;
  /** Further scalars to log (means over each logging window), e.g. separate loss terms. */
  metrics?: StepMetrics;
}

/** Context shared by every hook. */
export interface FitContext<M extends Module = Module> {
  /** In `prepare`/`loss`: the step being computed (1-based); elsewhere: steps completed. */
  readonly step: number;
  /** The trainer's model. */
  readonly model: M;
  /** The run directory. */
  readonly run: Run;
  /** The trainer's EMA, if any. */
  readonly ema: EMA | undefined;
  /** Whether this session continued a checkpoint. */
  readonly resumed: boolean;
}

/** Context of `setup`, `prepare` and `loss`. */
export interface StepContext<M extends Module = Module> extends FitContext<M> {
  /** Micro-batch index within the step (0 … gradAccumulation − 1). */
  readonly micro: number;
  /**
   * The run's random stream. Draw every training random number from it (data order, noise,
   * times, label dropout): it is saved in checkpoints, so a resumed run repeats the draws.
   */
  readonly generator: Generator;
  /**
   * A second model holding the current EMA weights (for bootstrap/distillation targets),
   * built once from `Trainer.emaModel` and refreshed after each EMA update. Its outputs
   * carry no gradient to the trained parameters.
   */
  emaModel(): M;
  /** Dispose `t` when this micro-step ends (for batches made in `prepare`). */
  track<T extends Tensor | undefined>(t: T): T;
}

/** Context of `sample`: the EMA weights are swapped in and the model is in eval mode. */
export interface SampleContext<M extends Module = Module> extends FitContext<M> {
  /** Whether this is the call after the last step. */
  readonly final: boolean;
  /** Append a record (e.g. `eval/…` metrics) to metrics.jsonl at this step. */
  log(record: Record<string, number>): Promise<void>;
}

/** Extra state a trainer keeps across steps, saved in the checkpoint's `state.*` tensors. */
export interface TrainerState {
  /**
   * The state now: tensors or host arrays, borrowed (the loop only reads them). Called at
   * every checkpoint.
   */
  save(): Record<string, Tensor | HostArray>;
  /** Restore what `save` returned (the loop disposes the tensors afterwards: copy them). */
  load(state: Record<string, Tensor>): void | Promise<void>;
}

/**
 * What a trainer supplies. Only `model`, `optimizer` and `loss` are required.
 *
 * Stochastic layers are handled for you: a `Dropout`/`LabelEmbedder` that would draw from
 * the global stream is pointed at the run's generator, and every other generator found on
 * the model's modules is saved and restored with the checkpoint.
 */
export interface Trainer<M extends Module = Module> {
  /** The network (its `stateDict()` is the checkpoint's `model.*`). */
  model: M;
  /** The optimizer stepping `params`. */
  optimizer: Optimizer;
  /** Parameters to train (default `model.parameters()`). */
  params?: Tensor[];
  /** EMA of `params`, updated after each optimizer step and checkpointed as `ema.*`. */
  ema?: EMA;
  /**
   * Build a same-architecture model for `ctx.emaModel()` (needs `ema`); called once. Put it
   * in the mode the targets need (usually `.eval()`): `fit` only copies the EMA weights in.
   */
  emaModel?: () => M;
  /** Name under which the loss is logged (default `training/loss_flow`). */
  lossMetric?: string;
  /** Once before the first step (after a resume restored everything). */
  setup?(ctx: StepContext<M>): void | Promise<void>;
  /**
   * Host work before each micro-step's loss (data batch, OT coupling read-back, bank
   * refill); may return metrics, e.g. host numbers it measured.
   */
  prepare?(ctx: StepContext<M>): void | StepMetrics | Promise<void | StepMetrics>;
  /** The differentiable loss of one micro-batch (called inside `valueAndGrad`). */
  loss(ctx: StepContext<M>): LossOutput;
  /** Extra state for checkpoints (e.g. a memory bank). */
  state?: TrainerState;
  /** Figures/evaluation every `sampleEvery` steps and after the last step, with EMA weights. */
  sample?(ctx: SampleContext<M>): void | Promise<void>;
}

/** Options of {@linkcode fit}. */
export interface FitOptions {
  /** The run directory (from `createRun`, `openRun` or `openTrainingRun`). */
  run: Run;
  /** Train until this many optimizer steps are done (a resumed run counts its past steps). */
  maxSteps: number;
  /** Steps per metrics line (default 100). */
  logEvery?: number;
  /** Steps between checkpoints (default 1000); one is always written after the last step. */
  checkpointEvery?: number;
  /** Steps between `sample` calls (default 0: only after the last step). */
  sampleEvery?: number;
  /** Clip the global gradient norm to this (default 0: no clipping). */
  gradClip?: number;
  /** Micro-batches per optimizer step; their gradients are averaged (default 1). */
  gradAccumulation?: number;
  /** The run's random stream (default `new Generator(seed)`). */
  generator?: Generator;
  /** Seed of the default generator (default 0). */
  seed?: number;
  /**
   * Continue from a checkpoint: `true` for the newest valid one in the run (a run killed
   * before its first checkpoint starts over from step 0), or a path. Everything after that
   * step in metrics.jsonl is dropped first. Resuming at the end of the budget rewrites the
   * last checkpoint and calls `sample` once more, without logging its records twice.
   */
  resume?: boolean | string | null;
  /** Learning rate as a function of the 0-based step and the optimizer's initial rate. */
  lrSchedule?: LrSchedule;
  /** Configuration stored in every checkpoint (and config.json on resume); default run.config. */
  config?: unknown;
  /** Progress label (default: none). */
  label?: string;
  /** Progress options, or false for none. */
  progress?: Omit<ProgressOptions, "startStep" | "label"> | false;
  /** Status lines such as "resumed …" (default console.error). */
  log?: (line: string) => void;
  /**
   * Stop request (e.g. the task's SIGINT/SIGTERM/parent-exit signal): when aborted, the loop
   * finishes the step it is in, writes a checkpoint there and throws
   * {@linkcode TrainingStoppedError}, so `--resume` continues without losing a step.
   */
  signal?: AbortSignal;
  /**
   * Replay a traced step instead of re-running the JavaScript op graph (default: on, unless
   * `configureTracing({ enabled: false })` or the tasks' `--no-trace` turned it off). Used
   * with `gradAccumulation` 1 on the WebGPU backend; the step falls back to eager execution
   * by itself when it cannot be replayed (see {@linkcode StepTracer}). A trainer whose `loss`
   * depends on host state that `prepare` changes, other than through the tensors it tracks
   * with `ctx.track`, must pass false.
   */
  trace?: boolean;
}

/** What {@linkcode fit} returns. */
export interface FitResult {
  /** Steps done (maxSteps). */
  step: number;
  /** Step the session started from (0, or the resumed checkpoint's). */
  startStep: number;
  /** The last checkpoint written or resumed from (null if none). */
  checkpoint: string | null;
  /** The checkpoint resumed from, or null. */
  resumedFrom: string | null;
  /** The last metrics record logged by the loop (null if none). */
  lastMetrics: Record<string, number> | null;
  /** Its loss (NaN when nothing was logged). */
  loss: number;
  /** How this session's steps ran: eagerly, captured for a trace, or replayed from it. */
  stepModes: Record<StepMode, number>;
}

/**
 * Training stopped because a value became NaN or ±Inf. Nothing was checkpointed after it;
 * `checkpoint` is the last (finite) one. Tasks exit with `exitCode` (3).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { NonFiniteError } from "../../mod.ts";
 * const e = new NonFiniteError({ step: 7, name: "training/loss_flow", value: NaN }, "c.safetensors");
 * assert.match(e.message, /training\/loss_flow became NaN at step 7/);
 * assert.equal(e.exitCode, 3);
 * ```
 */
export class NonFiniteError extends Error {
  /** Step of the first non-finite value (NaN when only the window is known). */
  readonly step: number;
  /** Which value (metric name). */
  readonly metric: string;
  /** The value. */
  readonly value: number;
  /** The last checkpoint (all finite), or null. */
  readonly checkpoint: string | null;
  /** Process exit status tasks use. */
  readonly exitCode = 3;
  /** Describe where training diverged. */
  constructor(where: NonFinite, checkpoint: string | null, windowStart = 0) {
    const at = Number.isNaN(where.step)
      ? `in the steps after ${windowStart}`
      : `at step ${where.step}`;
    super(
      `${where.name} became ${where.value} ${at}; training stopped without checkpointing ` +
        `after it (${
          checkpoint ? `last finite checkpoint: ${checkpoint}` : "no checkpoint was written"
        })`,
    );
    this.name = "NonFiniteError";
    this.step = where.step;
    this.metric = where.name;
    this.value = where.value;
    this.checkpoint = checkpoint;
  }
}

/** A metrics record's step and names (two records with the same key are one record twice). */
const recordKey = (r: Record<string, unknown>) => `${r.step} ${Object.keys(r).sort().join(",")}`;

/** Whether the run's checkpoint directory holds no checkpoint file at all (valid or not). */
async function hasNoCheckpoint(run: Run): Promise<boolean> {
  if ((await run.checkpoints.steps()).length > 0) return false;
  try {
    await denoApi("fit resume", "start a new run").lstat(run.checkpoints.lastPath);
    return false;
  } catch (e) {
    if (isNotFound(e)) return true;
    throw e;
  }
}

/**
 * Keep only metrics records up to `step` (later ones belong to steps a resumed run
 * recomputes); the file is rewritten atomically whenever it changes, which also drops a
 * line torn by a kill, so the next append cannot glue onto it.
 */
async function dropMetricsAfter(run: Run, step: number): Promise<void> {
  const recs = await run.readMetrics();
  const kept = recs.filter((m) => typeof m.step !== "number" || m.step <= step);
  const text = kept.map((m) => JSON.stringify(m) + "\n").join("");
  let now: string | null = null;
  try {
    now = await denoApi("fit resume", "start a new run").readTextFile(run.metricsPath);
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  if (now !== null && now !== text) await run.writeFile("metrics.jsonl", text);
}

/**
 * Training stopped on request ({@linkcode FitOptions.signal}) after a checkpoint at `step`.
 * Tasks exit with `exitCode`: the request's own (128 + signal) or 130.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { TrainingStoppedError } from "../../mod.ts";
 * const e = new TrainingStoppedError(40, 100, "runs/a", "runs/a/checkpoints/step-000040.safetensors", new Error("received SIGTERM"));
 * assert.match(e.message, /stopped at step 40 of 100 \(received SIGTERM\)/);
 * assert.match(e.message, /--resume runs\/a/);
 * assert.equal(e.exitCode, 130);
 * ```
 */
export class TrainingStoppedError extends Error {
  /** Steps done (the checkpoint's step). */
  readonly step: number;
  /** The checkpoint to continue from (null when none was ever written). */
  readonly checkpoint: string | null;
  /** Process exit status tasks use. */
  readonly exitCode: number;
  /** Describe where training stopped. */
  constructor(
    step: number,
    maxSteps: number,
    dir: string,
    checkpoint: string | null,
    reason: unknown,
  ) {
    const why = reason instanceof Error ? reason.message : String(reason ?? "stop requested");
    super(
      `stopped at step ${step} of ${maxSteps} (${why}); ` +
        (checkpoint ? `checkpoint ${checkpoint}; ` : "") + `continue with --resume ${dir}`,
    );
    this.name = "TrainingStoppedError";
    this.step = step;
    this.checkpoint = checkpoint;
    const code = (reason as { exitCode?: unknown })?.exitCode;
    this.exitCode = typeof code === "number" && code > 0 ? code : 130;
  }
}

function swapTrainingFlags(model: Module, to: boolean): () => void {
  const saved = [...model.namedModules().values()].map((m) => [m, m.training] as const);
  model.train(to);
  return () => saved.forEach(([m, t]) => (m.training = t));
}

/**
 * Train `trainer` until `maxSteps` optimizer steps are done; see the module doc for what
 * the loop owns. Throws {@linkcode NonFiniteError} when a loss, gradient norm or metric
 * becomes NaN/Inf (checked whenever the loop logs, checkpoints or samples).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createRun, fit, nn, optim, tensor, type Tensor } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const run = await createRun("demo", { outputDir: dir, config: {} });
 * const model = new nn.Linear(2, 1, { seed: 0 });
 * const x = tensor([[1, 2], [3, 4]]), y = tensor([[1], [2]]);
 * const res = await fit({
 *   model,
 *   optimizer: new optim.Adam({ lr: 0.05 }),
 *   ema: new optim.EMA(model, { decay: 0.9 }),
 *   loss: (ctx) => {
 *     const d: Tensor = model.forward(x).sub(y);
 *     return { loss: d.square().mean(), metrics: { "training/abs_err": d.abs().mean() } };
 *   },
 * }, { run, maxSteps: 20, logEvery: 10, checkpointEvery: 10, progress: false });
 * assert.equal(res.step, 20);
 * const m = await run.readMetrics();
 * assert.deepEqual(m.map((r) => r.step), [10, 20]);
 * assert.ok((m[1]!["training/loss_flow"] as number) < (m[0]!["training/loss_flow"] as number));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function fit<M extends Module>(
  trainer: Trainer<M>,
  options: FitOptions,
): Promise<FitResult> {
  const o = options;
  const run = o.run;
  if (!run || typeof run.logMetrics !== "function") {
    throw new TypeError("Expected fit options.run to be a Run (createRun/openRun)");
  }
  const maxSteps = checkInt("maxSteps", o.maxSteps, 0);
  const logEvery = checkInt("logEvery", o.logEvery ?? 100, 1);
  const ckptEvery = checkInt("checkpointEvery", o.checkpointEvery ?? 1000, 1);
  const sampleEvery = checkInt("sampleEvery", o.sampleEvery ?? 0, 0);
  const clip = checkNumber("gradClip", o.gradClip ?? 0, 0);
  const accum = checkInt("gradAccumulation", o.gradAccumulation ?? 1, 1);
  const { model, optimizer: opt, ema } = trainer;
  if (typeof trainer.loss !== "function" || !model || !opt) {
    throw new TypeError("Expected a trainer with model, optimizer and loss(ctx)");
  }
  if (trainer.emaModel && !ema) {
    throw new TypeError("Trainer.emaModel needs Trainer.ema (the weights it holds)");
  }
  const say = o.log ?? ((l: string) => console.error(l));
  const label = o.label ?? "";
  const lossName = trainer.lossMetric ?? "training/loss_flow";
  const gen = o.generator ?? new Generator(o.seed ?? 0);
  const params = trainer.params ?? model.parameters();
  const baseLr = opt.lr;
  const config = o.config ?? run.config;

  const lock = await lockRunDir(run.dir);
  const window = new MetricWindow();
  let twin: M | undefined;
  let twinFresh = false;
  let tracer: StepTracer | null = null;
  try {
    if (lock.tookOverFrom !== null) {
      say(`${label || "fit"}: took over the lock of ${run.dir} from process ${lock.tookOverFrom}`);
    }
    await removeStaleTemps(run.dir);
    const streams = streamsOf(model, gen);
    if (trainer.emaModel) {
      twin = trainer.emaModel();
      for (const [k, g] of streamsOf(twin, gen)) streams.set(`emaModel:${k}`, g);
    }
    let step = 0;
    let resumedFrom: string | null = null;
    let lastCkpt: string | null = null;
    // A run killed before its first checkpoint has nothing to restore: it starts over.
    const nothingSaved = o.resume === true && await hasNoCheckpoint(run);
    if (nothingSaved) {
      await dropMetricsAfter(run, 0);
      say(`${label || "fit"}: ${run.dir} has no checkpoint yet; starting it from step 0`);
    } else if (o.resume) {
      const r = await restoreCheckpoint(run, o.resume, {
        model,
        opt,
        ema,
        params,
        gen,
        streams,
        state: trainer.state,
        window,
      });
      step = r.step;
      resumedFrom = lastCkpt = r.path;
      if (step > maxSteps) {
        throw new RangeError(
          `Cannot resume ${r.path} at step ${step} with a budget of ${maxSteps} steps; ` +
            `raise the step budget (e.g. --max-train-steps)`,
        );
      }
      await dropMetricsAfter(run, step);
      if (o.config !== undefined) {
        await run.writeFile("config.json", configFileText(o.config));
      }
      say(`${label || "fit"}: resumed ${r.path} at step ${step}`);
    }
    const resumed = resumedFrom !== null;
    const startStep = step;

    let tracked: Tensor[] = [];
    const base = (s: number): FitContext<M> => ({ step: s, model, run, ema, resumed });
    const stepCtx = (s: number, micro: number): StepContext<M> => ({
      ...base(s),
      // A loss that reads the step bakes it into the step: such a step is never replayed.
      get step() {
        captureHooks()?.refuse("the loss read ctx.step");
        return s;
      },
      micro,
      generator: gen,
      emaModel: () => {
        if (!twin) throw new TypeError("ctx.emaModel() needs Trainer.emaModel (a model factory)");
        if (!twinFresh) {
          ema!.copyTo(twin);
          twinFresh = true;
        }
        return twin;
      },
      track: <T extends Tensor | undefined>(t: T): T => {
        if (t) tracked.push(t);
        return t;
      },
    });
    const releaseTracked = () => {
      tracked.forEach((t) => t.isDisposed || t.dispose());
      tracked = [];
    };

    let hostOut: Record<string, number> = {};
    const vg = valueAndGrad((_p: Tensor[], ctx: StepContext<M>) => {
      const out = trainer.loss(ctx);
      const dev: Record<string, Tensor> = {};
      for (const [k, v] of Object.entries(out.metrics ?? {})) {
        if (typeof v === "number") hostOut[k] = v;
        else dev[k] = v;
      }
      return [out.loss, dev] as [Tensor, Record<string, Tensor>];
    }, { hasAux: true });

    let savedStep = resumed ? step : -1;
    const save = async (s: number) => {
      savedStep = s;
      lastCkpt = await saveTrainingCheckpoint(run, s, {
        model,
        opt,
        ema,
        gen,
        streams,
        state: trainer.state,
        window,
        config,
      });
    };
    const sample = async (s: number, final: boolean, again = false) => {
      if (!trainer.sample) return;
      const logged = again ? new Set((await run.readMetrics()).map(recordKey)) : null;
      const restore = swapTrainingFlags(model, false);
      ema?.swapInto(params);
      try {
        await trainer.sample({
          ...base(s),
          final,
          log: async (rec) => {
            if (!logged?.has(recordKey({ step: s, ...rec }))) await run.logMetrics(s, rec);
          },
        });
      } finally {
        ema?.swapInto(params);
        restore();
      }
    };

    if (trainer.setup) {
      await trainer.setup(stepCtx(step, 0));
      releaseTracked();
    }
    const progress = o.progress === false ? null : new Progress(maxSteps, {
      ...o.progress,
      label,
      startStep: step,
    });
    // The first line comes now: the first step may spend seconds compiling GPU pipelines.
    progress?.start(
      step < maxSteps ? "the first step compiles the GPU pipelines" : "nothing left to do",
    );
    let windowStart = step;
    let lastMetrics: Record<string, number> | null = null;
    const fail = (bad: NonFinite): never => {
      progress?.done({ stopped: `non-finite ${bad.name}` });
      throw new NonFiniteError(bad, lastCkpt, windowStart);
    };

    // The only readback points: NaN check, log line, samples, checkpoint (in that order).
    // Everything step s writes to metrics.jsonl comes before its checkpoint, so a run killed
    // at any point resumes from a checkpoint whose records are all written, and recomputes
    // (after dropping) every record past it: no record is lost or written twice.
    const atReadback = async (s: number, final: boolean): Promise<void> => {
      const logNow = s % logEvery === 0;
      const snap = await window.read();
      if (snap.nonFinite) fail(snap.nonFinite);
      const record: Record<string, number> = { ...snap.means, "training/lr": opt.lr };
      if (logNow || final) {
        await run.logMetrics(s, record);
        lastMetrics = record;
      }
      // The checkpoint keeps a partly filled window (a final step off the log cadence), so
      // a resumed run logs the same means at its next log step as an uninterrupted run.
      if (logNow) {
        window.reset();
        windowStart = s;
      }
      if (final) {
        progress?.update(s, lastMetrics ? { loss: lastMetrics[lossName] } : {});
        progress?.done();
      }
      const sampleNow = final || (sampleEvery > 0 && s % sampleEvery === 0);
      try {
        if (sampleNow) await sample(s, final);
      } catch (e) {
        // A failed figure must not cost the training done: keep the step, then report.
        await save(s);
        throw e;
      }
      if (s % ckptEvery === 0 || final) await save(s);
    };

    // A stop request: the step in progress has ended; keep it, then report.
    const stopHere = async (): Promise<never> => {
      if (step > savedStep && step > 0) {
        const snap = await window.read();
        if (snap.nonFinite) fail(snap.nonFinite);
        await save(step);
      }
      progress?.done({ stopped: "stop requested" });
      throw new TrainingStoppedError(step, maxSteps, run.dir, lastCkpt, o.signal?.reason);
    };

    // After a step (eager or traced): the readbacks its number calls for, then the progress
    // line (host-only bookkeeping: it/s and ETA stay current between log lines).
    const endStep = async (s: number): Promise<void> => {
      const final = s === maxSteps;
      if (
        final || s % logEvery === 0 || s % ckptEvery === 0 ||
        (sampleEvery > 0 && s % sampleEvery === 0)
      ) await atReadback(s, final);
      if (!final) progress?.update(s, lastMetrics ? { loss: lastMetrics[lossName] } : {});
    };

    // The update both paths share: clip (optionally), step the optimizer, then the EMA; returns
    // the gradient norm (before clipping) and disposes of the gradients.
    const update = (grads: Tensor[]): Tensor => {
      let norm: Tensor;
      if (clip > 0) {
        const c = clipGradNorm(grads, clip);
        opt.step(params, c.grads);
        c.grads.forEach((t) => t.dispose());
        norm = c.norm;
      } else {
        opt.step(params, grads);
        norm = globalNorm(grads);
      }
      grads.forEach((t) => t.dispose());
      ema?.update(params);
      return norm;
    };

    // One step with a single micro-batch, replayed from its trace when one is held: prepare
    // runs eagerly (host work, readbacks), and the tensors it tracks are the trace's inputs.
    const tracedStep = async (s: number): Promise<void> => {
      const ctx = stepCtx(s, 0);
      hostOut = {};
      const host: Record<string, number> = {};
      const prepDev: Record<string, Tensor> = {};
      try {
        const pm = await trainer.prepare?.(ctx);
        for (const [k, v] of Object.entries(pm ?? {})) {
          if (typeof v === "number") host[k] = v;
          else prepDev[k] = v;
        }
        const inputs = [...tracked.filter((t) => !t.isDisposed), ...Object.values(prepDev)];
        const mode = tracer!.run({ step: s }, inputs, () => {
          const [[loss, aux], grads] = vg(params, ctx);
          // Host numbers from the loss would be missing from a replay.
          if (Object.keys(hostOut).length) captureHooks()?.refuse("the loss reported host metrics");
          const dev: Record<string, Tensor> = { ...prepDev, [lossName]: loss, ...aux };
          dev["training/grad_norm"] = update(grads);
          window.add(s, dev, {});
        });
        if (mode === "replayed") Object.values(prepDev).forEach((t) => t.dispose());
        if (ema) twinFresh = false;
        // A name reported by both prepare and the loss is averaged, as on the eager path.
        for (const [k, v] of Object.entries(hostOut)) host[k] = k in host ? (host[k]! + v) / 2 : v;
      } finally {
        releaseTracked();
      }
      const hostBad = window.add(s, {}, host);
      if (hostBad) fail(hostBad);
    };
    if (accum === 1) tracer = new StepTracer(o.trace === undefined ? {} : { enabled: o.trace });

    // A step only records GPU work, so between the log reads the loop never waits on the event
    // loop, and a signal's listener (a macrotask) could not run for logEvery steps (minutes for
    // a slow model). With a stop signal to watch, yield to the event loop at least every 200 ms.
    let yielded = performance.now();
    while (step < maxSteps) {
      if (o.signal && performance.now() - yielded > 200) {
        await new Promise((r) => setTimeout(r, 0));
        yielded = performance.now();
      }
      if (o.signal?.aborted) await stopHere();
      const s = step + 1;
      if (o.lrSchedule) opt.lr = o.lrSchedule(s - 1, baseLr);
      if (tracer) {
        await tracedStep(s);
        step = s;
        await endStep(s);
        continue;
      }
      let grads: Tensor[] | null = null;
      const dev: Record<string, Tensor> = {};
      const devN: Record<string, number> = {};
      const host: Record<string, number> = {};
      const hostN: Record<string, number> = {};
      const addDev = (k: string, v: Tensor) => {
        const prev = dev[k];
        dev[k] = prev ? prev.add(v) : v;
        if (prev) {
          prev.dispose();
          v.dispose();
        }
        devN[k] = (devN[k] ?? 0) + 1;
      };
      const addHost = (k: string, v: number) => {
        host[k] = (host[k] ?? 0) + v;
        hostN[k] = (hostN[k] ?? 0) + 1;
      };
      for (let micro = 0; micro < accum; micro++) {
        const ctx = stepCtx(s, micro);
        hostOut = {};
        let loss: Tensor, aux: Record<string, Tensor>, g: Tensor[];
        try {
          const pm = await trainer.prepare?.(ctx);
          for (const [k, v] of Object.entries(pm ?? {})) {
            if (typeof v === "number") addHost(k, v);
            else addDev(k, v);
          }
          [[loss, aux], g] = vg(params, ctx);
        } finally {
          releaseTracked();
        }
        addDev(lossName, loss);
        for (const [k, v] of Object.entries(aux)) addDev(k, v);
        for (const [k, v] of Object.entries(hostOut)) addHost(k, v);
        if (!grads) grads = g;
        else {
          const sum: Tensor[] = grads.map((a, i) => a.add(g[i]!));
          grads.forEach((t) => t.dispose());
          g.forEach((t) => t.dispose());
          grads = sum;
        }
      }
      // Micro-batch means: the average gradient equals the gradient of the mean loss.
      const mean = (t: Tensor, n: number): Tensor => {
        if (n === 1) return t;
        const m = mul(t, 1 / n);
        t.dispose();
        return m;
      };
      grads = grads!.map((t) => mean(t, accum));
      for (const k of Object.keys(dev)) dev[k] = mean(dev[k]!, devN[k]!);
      for (const k of Object.keys(host)) host[k] = host[k]! / hostN[k]!;
      const norm = update(grads);
      if (ema) twinFresh = false;
      step = s;
      dev["training/grad_norm"] = norm;
      const hostBad = window.add(s, dev, host);
      if (hostBad) fail(hostBad);

      await endStep(s);
    }
    if (step === startStep) {
      // Resumed at the end of the budget (a kill after the last checkpoint): nothing to
      // train. Write the checkpoint again (last.safetensors and pruning may be behind) and
      // give the trainer its final call; records it logged before the kill are not repeated.
      progress?.done();
      if (resumed) await save(step);
      await sample(step, true, resumed);
    }
    const lm = lastMetrics as Record<string, number> | null;
    return {
      step,
      startStep,
      checkpoint: lastCkpt,
      resumedFrom,
      lastMetrics: lm,
      loss: lm?.[lossName] ?? NaN,
      stepModes: tracer
        ? { ...tracer.counts }
        : { eager: step - startStep, captured: 0, replayed: 0 },
    };
  } finally {
    tracer?.dispose();
    window.dispose();
    twin?.dispose();
    await lock.release();
  }
}
