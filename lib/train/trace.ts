/**
 * @file `StepTracer`: run a training step eagerly until its dispatch sequence is known, then
 * replay it (lib/device/trace.ts) instead of running the JavaScript op graph again. A step is
 * captured while it runs eagerly; when two consecutive captures describe the same step (same
 * kernels, grids, buffers and constant parameter words; per-step values such as RNG counters,
 * bias corrections, the scheduled lr and the step number recomputed by the code that owns them,
 * lib/capture.ts), the later one becomes the trace. Every later step whose inputs have the
 * captured shapes is replayed; a shape change, or a freed buffer the trace uses (a checkpoint
 * load, a new logging window, EMA weights swapped in for samples), drops the trace and the
 * step runs eagerly (and is captured again). A step that cannot be replayed (it reads a value
 * back, draws host random numbers, reads `ctx.step`, or changes from step to step) stays eager:
 * after three failed attempts in a row the tracer gives up, saying why once when asked to
 * (`configureTracing({ debug: true })`, the tasks' `--debug`). On the CPU backend every step
 * is eager.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { getBackend } from "../backend/select.ts";
import { GpuStorage, WebGPUBackend } from "../backend/webgpu.ts";
import type { TraceEnv } from "../capture.ts";
import type { GpuRuntime } from "../device/runtime.ts";
import { type CapturedStep, compareSteps, type StepTrace } from "../device/trace.ts";

/** How a step ran. */
export type StepMode = "eager" | "captured" | "replayed";

/** Options of {@linkcode StepTracer}. */
export interface StepTracerOptions {
  /** Trace at all (default: the process-wide default, true unless `configureTracing` said no). */
  enabled?: boolean;
  /** Where to say (once per reason) why a step runs eagerly; default: stderr when debugging. */
  log?: ((line: string) => void) | null;
  /** Consecutive failed captures before giving up (default 3). */
  maxAttempts?: number;
}

const defaults = { enabled: true, debug: false };

/**
 * Set the process-wide tracing defaults: `enabled` (the tasks' `--no-trace` sets false) and
 * `debug` (the tasks' `--debug`: say on stderr why a step falls back to eager execution).
 * Returns the previous settings.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { configureTracing } from "./trace.ts";
 * const prev = configureTracing({ enabled: false });
 * assert.equal(prev.enabled, true);
 * configureTracing(prev);
 * ```
 */
export function configureTracing(
  opts: { enabled?: boolean; debug?: boolean },
): { enabled: boolean; debug: boolean } {
  const prev = { ...defaults };
  if (opts.enabled !== undefined) defaults.enabled = Boolean(opts.enabled);
  if (opts.debug !== undefined) defaults.debug = Boolean(opts.debug);
  return prev;
}

/** The buffer of a tensor on the WebGPU backend. */
function bufferOf(t: Tensor, i: number): GPUBuffer {
  const s = t.storage;
  if (!(s instanceof GpuStorage) || s.buffer === null) {
    throw new TypeError(`Expected trace input ${i} to be a live WebGPU tensor`);
  }
  return s.buffer;
}

/**
 * Runs steps eagerly or replays their trace (see the module doc).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fusedGroups, Generator, getBackend, init, StepTracer, tensor } from "../../mod.ts";
 * await init(); // WebGPU when an adapter exists, else the CPU (every step eager)
 * const gen = new Generator(0);
 * const acc = tensor([0, 0]); // state updated in place: a replay writes the same buffer
 * const tracer = new StepTracer();
 * const modes: string[] = [];
 * for (let step = 1; step <= 5; step++) {
 *   const x = tensor([step, 2 * step]); // a new batch each step: the step's input
 *   modes.push(tracer.run({ step }, [x], () => {
 *     const u = gen.uniform([2]); // a replay draws the next numbers of the stream
 *     fusedGroups([[acc, x, u]], [], (a, b, r) => a!.add(b!).add(r!.mul(0)), { into: [0] });
 *     u.dispose();
 *   }));
 *   x.dispose();
 * }
 * // acc = Σ (step, 2·step) over steps 1..5, whichever way each step ran.
 * assert.deepEqual([...await acc.data()], [15, 30]);
 * assert.equal(gen.counter, 5); // one Philox block per draw of 2 uniforms, replayed or not
 * // On WebGPU: steps 1–2 are captured and compared, 3–5 replayed; on the CPU all are eager.
 * const gpu = getBackend().name === "webgpu";
 * assert.deepEqual(modes, gpu
 *   ? ["captured", "captured", "replayed", "replayed", "replayed"]
 *   : ["eager", "eager", "eager", "eager", "eager"]);
 * tracer.dispose();
 * ```
 */
export class StepTracer {
  /** Steps run eagerly, captured, and replayed. */
  readonly counts: Record<StepMode, number> = { eager: 0, captured: 0, replayed: 0 };
  #enabled: boolean;
  #log: ((line: string) => void) | null;
  #max: number;
  #rt: GpuRuntime | null = null;
  #candidate: CapturedStep | null = null;
  #candidateShapes: string | null = null;
  #trace: StepTrace | null = null;
  #shapes: string | null = null;
  #fails = 0;
  #gaveUp: string | null = null;
  #said = new Set<string>();

  /** A tracer; see {@linkcode StepTracerOptions}. */
  constructor(opts: StepTracerOptions = {}) {
    this.#enabled = opts.enabled ?? defaults.enabled;
    this.#log = opts.log !== undefined ? opts.log : defaults.debug ? (l) => console.error(l) : null;
    this.#max = opts.maxAttempts ?? 3;
  }

  /** Whether a valid trace is held (the next step with the same input shapes replays). */
  get tracing(): boolean {
    return this.#trace?.valid ?? false;
  }

  /** Why tracing was given up (null while it is still tried). */
  get gaveUp(): string | null {
    return this.#gaveUp;
  }

  /** @internal The trace held (tests check what it pins). */
  get trace(): StepTrace | null {
    return this.#trace?.valid ? this.#trace : null;
  }

  #say(key: string, line: string): void {
    if (this.#said.has(key)) return;
    this.#said.add(key);
    this.#log?.(`trace: ${line}`);
  }

  #runtime(): GpuRuntime | null {
    const be = getBackend();
    return be instanceof WebGPUBackend ? be.runtime : null;
  }

  /**
   * Run step `env.step`: replay the trace when it matches `inputs`, else run `fn` eagerly
   * (capturing it). `inputs` are the tensors made before the step that `fn` reads and that
   * change from step to step (a data batch); everything else `fn` reads must be state that
   * lives across steps (parameters, optimizer slots). `fn` must do all its device work
   * synchronously and keep no tensor it makes beyond state it updates in place.
   */
  run(env: TraceEnv, inputs: readonly Tensor[], fn: () => void): StepMode {
    const rt = this.#enabled && this.#gaveUp === null ? this.#runtime() : null;
    if (!rt || rt.capturing) {
      fn();
      this.counts.eager++;
      return "eager";
    }
    if (this.#rt !== rt) {
      this.#reset();
      this.#rt = rt;
    }
    const shapes = inputs.map((t) => t.shape.join("x")).join(",");
    const bufs = inputs.map(bufferOf);
    const t = this.#trace;
    if (t && !t.valid) {
      this.#say(`drop:${t.invalidReason}`, `trace dropped (${t.invalidReason}); capturing again`);
      this.#trace = null;
    } else if (t && shapes !== this.#shapes) {
      this.#say("shape", `input shapes changed (${this.#shapes} → ${shapes}); running eagerly`);
      t.dispose();
      this.#trace = null;
    } else if (t) {
      rt.replayTrace(t, env, bufs);
      this.counts.replayed++;
      return "replayed";
    }
    rt.beginCapture(bufs);
    let cap: CapturedStep;
    try {
      fn();
    } finally {
      cap = rt.endCapture();
    }
    this.counts.captured++;
    const prev = this.#candidate, prevShapes = this.#candidateShapes;
    const why = !prev
      ? cap.refused
      : prevShapes !== shapes
      ? "input shapes changed"
      : compareSteps(prev, cap);
    if (prev && why === null) {
      this.#trace = rt.buildTrace(cap);
      this.#shapes = shapes;
      this.#candidate = null;
      this.#fails = 0;
      return "captured";
    }
    // A candidate is only compared with the next capture: its temporaries go back to the
    // pool at once, so capturing never holds two steps' worth of them.
    rt.discardCapture(cap);
    this.#candidate = cap;
    this.#candidateShapes = shapes;
    if (why !== null) this.#fail(why);
    return "captured";
  }

  #fail(why: string): void {
    if (++this.#fails < this.#max) return;
    this.#gaveUp = why;
    this.#candidate = null;
    this.#say("gave-up", `the step cannot be replayed (${why}); running it eagerly`);
  }

  #reset(): void {
    this.#candidate = null;
    this.#trace?.dispose();
    this.#trace = null;
  }

  /** Release the trace and any pending capture. */
  dispose(): void {
    this.#reset();
    this.#rt = null;
  }
}
