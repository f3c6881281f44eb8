/**
 * @file What a training checkpoint holds beyond the tensors `lib/io` knows about, and how
 * `fit` writes and restores it: the model's own random streams (dropout masks, label
 * dropout), the trainer's extra state (`state.*` tensors), the optimizer/EMA counters and
 * the partly filled logging window. Everything a step depends on is here, which is what
 * makes a resumed run bit-identical to an uninterrupted one on the CPU backend.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { Generator, type GeneratorState } from "../random.ts";
import { Dropout, LabelEmbedder, type Module } from "../nn/mod.ts";
import type { EMA, Optimizer } from "../optim/mod.ts";
import { type Checkpoint, loadCheckpoint, type Run } from "../io/mod.ts";
import type { MetricWindow, WindowState } from "./window.ts";
import type { TrainerState } from "./fit.ts";

/**
 * The random streams a model draws from during training, by `<module path>:<field>`.
 * Layers that would use the global stream (a `Dropout` or `LabelEmbedder` built without a
 * generator) are pointed at `runGen` first, since the global stream is not checkpointed;
 * generators identical to `runGen` are not listed (the run's stream is saved on its own).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, nn, streamsOf } from "../../mod.ts";
 * const net = new nn.Sequential([new nn.Dropout(0.1), new nn.Dropout(0.2, { generator: new Generator(5) })]);
 * const run = new Generator(0);
 * const s = streamsOf(net, run);
 * assert.deepEqual([...s.keys()], ["1:generator"]);
 * assert.equal((net.at(0) as nn.Dropout).generator, run);
 * ```
 */
export function streamsOf(model: Module, runGen: Generator): Map<string, Generator> {
  const out = new Map<string, Generator>();
  const seen = new Set<Generator>([runGen]);
  for (const [path, m] of model.namedModules()) {
    if (m instanceof Dropout && m.generator === undefined) m.generator = runGen;
    if (m instanceof LabelEmbedder && m.dropGenerator === undefined) m.dropGenerator = runGen;
    for (const [k, v] of Object.entries(m)) {
      if (v instanceof Generator && !seen.has(v)) {
        seen.add(v);
        out.set(`${path}:${k}`, v);
      }
    }
  }
  return out;
}

/** Set `g` to a saved state in place (objects holding `g` see the change). */
function restoreStream(g: Generator, s: GeneratorState | undefined, what: string): void {
  if (!s || typeof s.counter !== "number") return;
  if (s.seed !== g.seed) {
    throw new RangeError(
      `${what} has seed ${s.seed} in the checkpoint but ${g.seed} in this run; resume with the ` +
        `run's own configuration`,
    );
  }
  g.counter = s.counter;
}

/** @internal Everything `fit` checkpoints. */
export interface TrainingState {
  model: Module;
  opt: Optimizer;
  ema: EMA | undefined;
  params?: Tensor[];
  gen: Generator;
  streams: Map<string, Generator>;
  state: TrainerState | undefined;
  window: MetricWindow;
  config?: unknown;
}

/** @internal Write the checkpoint for `step` (the window must have been read). */
export async function saveTrainingCheckpoint(
  run: Run,
  step: number,
  s: TrainingState,
): Promise<string> {
  const opt = s.opt.stateDict();
  return await run.checkpoints.save(step, {
    model: s.model.stateDict(),
    ema: s.ema?.namedShadows(),
    optimizer: opt.tensors,
    state: s.state?.save(),
    rng: s.gen.state(),
    config: s.config,
    extra: {
      optimizerStep: opt.step,
      ...(s.ema ? { emaUpdates: s.ema.numUpdates } : {}),
      streams: Object.fromEntries([...s.streams].map(([k, g]) => [k, g.state()])),
      window: s.window.state(),
    },
  });
}

function disposeCheckpoint(ck: Checkpoint): void {
  for (const sec of [ck.model, ck.ema, ck.optimizer, ck.state]) {
    for (const t of Object.values(sec ?? {})) (t as Tensor).dispose?.();
  }
}

/**
 * @internal Load `resume` (`true`: the newest valid checkpoint of the run; a string: that
 * file) into the training state; returns its step and path.
 */
export async function restoreCheckpoint(
  run: Run,
  resume: true | string,
  s: TrainingState,
): Promise<{ step: number; path: string }> {
  const found = typeof resume === "string"
    ? { path: resume, checkpoint: await loadCheckpoint(resume) }
    : await run.checkpoints.latest();
  if (!found) {
    throw new RangeError(
      `Cannot resume ${run.dir}: no valid checkpoint in ${run.checkpoints.dir}`,
    );
  }
  const { path, checkpoint: ck } = found;
  const extra = ck.extra ?? {};
  try {
    s.model.loadStateDict(ck.model);
    if (s.ema) {
      if (!ck.ema) throw new RangeError(`Cannot resume ${path}: it holds no EMA weights`);
      s.ema.loadStateDict({ numUpdates: Number(extra.emaUpdates ?? 0), tensors: ck.ema });
    }
    s.opt.loadStateDict(
      { step: Number(extra.optimizerStep ?? 0), tensors: ck.optimizer ?? {} },
      s.params,
    );
    if (!ck.rng) throw new RangeError(`Cannot resume ${path}: the checkpoint has no RNG state`);
    restoreStream(s.gen, ck.rng, `${path}: the run's random stream`);
    const saved = (extra.streams ?? {}) as Record<string, GeneratorState>;
    for (const [k, g] of s.streams) restoreStream(g, saved[k], `${path}: stream ${k}`);
    if (s.state) {
      if (!ck.state || Object.keys(ck.state).length === 0) {
        throw new RangeError(
          `Cannot resume ${path}: it holds no trainer state (state.* tensors); it was written ` +
            `before this trainer checkpointed its state`,
        );
      }
      await s.state.load(ck.state as Record<string, Tensor>);
    }
    s.window.load(extra.window as WindowState | undefined);
  } finally {
    disposeCheckpoint(ck);
  }
  return { step: ck.step, path };
}
