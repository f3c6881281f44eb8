/**
 * @file A traced step: the dispatch sequence of one training step (kernels, buffers,
 * parameter words, grids, copies), recorded once by `GpuRuntime.beginCapture/endCapture`
 * while the step runs eagerly, and replayed on later steps without running the JavaScript op
 * graph that made it — the role of `jax.jit` or CUDA graphs. The runtime keeps every
 * temporary the step used pinned (outside the pool) for the trace's lifetime, gives each
 * input (a batch made before the step) a private buffer that a replay refills, builds the
 * bind groups and the parameter words once, and drops the trace as soon as a buffer it reads
 * or writes is freed. Per-step values baked into parameter words are recomputed at each
 * replay from the host effects recorded with them (lib/capture.ts).
 * @module
 */
import type { TraceEnv } from "../capture.ts";
import type { Kernel } from "./runtime.ts";

/** A parameter word holding a per-step value: its index and how to recompute it (a u32). */
export type DynWord = readonly [index: number, value: (env: TraceEnv) => number];

/** A recorded buffer-to-buffer copy (captured and encoded alike). */
interface CopyOp {
  kind: "copy";
  src: GPUBuffer;
  srcOffset: number;
  dst: GPUBuffer;
  dstOffset: number;
  bytes: number;
}

/** One recorded command of a captured step. */
export type CapOp =
  | {
    kind: "dispatch";
    k: Kernel;
    bufs: (GPUBuffer | GPUBufferBinding)[];
    params: Uint32Array | null;
    dyn: DynWord[] | null;
    grid: [number, number, number];
  }
  | CopyOp
  | { kind: "upload"; buf: GPUBuffer; data: Float32Array }
  | { kind: "host"; fn: (env: TraceEnv) => void };

/** What `GpuRuntime.endCapture` returns. */
export interface CapturedStep {
  /** The commands and host effects, in order. */
  ops: CapOp[];
  /** The input buffers given to `beginCapture`. */
  inputs: GPUBuffer[];
  /** Temporaries the step made and freed (pinned until the step is traced or discarded). */
  owned: Set<GPUBuffer>;
  /** Buffers the step made and left alive (new state, e.g. accumulators made on first use). */
  liveOut: Set<GPUBuffer>;
  /** Buffers made before the step that it used (parameters, optimizer slots…), not inputs. */
  external: Set<GPUBuffer>;
  /** Buffers made before the step that it freed. */
  released: Set<GPUBuffer>;
  /** Why the step cannot be replayed (a readback, an inlined per-step value…), or null. */
  refused: string | null;
  /** Whether its temporaries went back to the pool (or to a trace): it cannot be traced. */
  discarded: boolean;
}

/** @internal What the runtime hands a new trace. */
export interface TraceParts {
  device: GPUDevice;
  align: number;
  capture: CapturedStep;
  inputCopies: Map<GPUBuffer, GPUBuffer>;
  staging(data: Float32Array): GPUBuffer;
  release(pooled: GPUBuffer[], destroy: GPUBuffer[]): void;
  onDispose(t: StepTrace): void;
}

type Encoded =
  | { kind: "dispatch"; k: Kernel; bgs: GPUBindGroup[]; grid: [number, number, number] }
  | CopyOp;

// Uniform buffers per trace: with ~50 dispatches a step and a submit every 512 dispatches,
// ten replays fit one submit without reusing a slot whose words are still pending.
const RING = 12;

type Role = "input" | "owned" | "liveOut" | "external";

function roleOf(c: CapturedStep, b: GPUBuffer): Role {
  if (c.inputs.includes(b)) return "input";
  if (c.owned.has(b)) return "owned";
  if (c.liveOut.has(b)) return "liveOut";
  return "external";
}

function buffersOf(op: CapOp): GPUBuffer[] {
  if (op.kind === "dispatch") return op.bufs.map((b) => (b instanceof GPUBuffer ? b : b.buffer));
  if (op.kind === "copy") return [op.src, op.dst];
  if (op.kind === "upload") return [op.buf];
  return [];
}

function bindingShape(b: GPUBuffer | GPUBufferBinding): string {
  return b instanceof GPUBuffer ? "whole" : `${b.offset ?? 0}:${b.size ?? "rest"}`;
}

/**
 * Why two captures of consecutive steps do not describe the same replayable step, or null
 * when they do: the same commands, kernels, grids and constant parameter words, dynamic words
 * at the same places, and buffers that correspond (the same buffer for state made before the
 * steps, the same input slot, one-to-one for temporaries). State the first step made and left
 * alive must have been replaced (freed) by the second, else each step adds state and a replay
 * could not.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { compareSteps, type CapturedStep } from "./trace.ts";
 * const empty = (): CapturedStep => ({ ops: [], inputs: [], owned: new Set(), liveOut: new Set(),
 *   external: new Set(), released: new Set(), refused: null, discarded: false });
 * assert.equal(compareSteps(empty(), empty()), null);
 * const b = empty();
 * b.ops.push({ kind: "host", fn: () => {} });
 * assert.match(compareSteps(empty(), b)!, /1 commands instead of 0/);
 * ```
 */
export function compareSteps(a: CapturedStep, b: CapturedStep): string | null {
  if (a.refused) return a.refused;
  if (b.refused) return b.refused;
  if (a.ops.length !== b.ops.length) {
    return `the step recorded ${b.ops.length} commands instead of ${a.ops.length}`;
  }
  if (a.inputs.length !== b.inputs.length) return "the number of inputs changed";
  const ab = new Map<GPUBuffer, GPUBuffer>(), ba = new Map<GPUBuffer, GPUBuffer>();
  const same = (x: GPUBuffer, y: GPUBuffer): boolean => {
    const rx = roleOf(a, x), ry = roleOf(b, y);
    if (rx !== ry) return false;
    if (x.size !== y.size) return false;
    if (rx === "input") return a.inputs.indexOf(x) === b.inputs.indexOf(y);
    if (rx === "external") return x === y;
    const mx = ab.get(x), my = ba.get(y);
    if (mx === undefined && my === undefined) {
      ab.set(x, y);
      ba.set(y, x);
      return true;
    }
    return mx === y && my === x;
  };
  for (let i = 0; i < a.ops.length; i++) {
    const x = a.ops[i]!, y = b.ops[i]!;
    const at = `command ${i} (${x.kind === "dispatch" ? x.k.key.slice(0, 40) : x.kind})`;
    if (x.kind !== y.kind) return `${at} became a ${y.kind}`;
    if (x.kind === "dispatch" && y.kind === "dispatch") {
      if (x.k !== y.k) return `${at} changed kernel`;
      if (x.grid.join() !== y.grid.join()) return `${at} changed grid`;
      if (x.bufs.length !== y.bufs.length) return `${at} changed bindings`;
      for (let j = 0; j < x.bufs.length; j++) {
        if (bindingShape(x.bufs[j]!) !== bindingShape(y.bufs[j]!)) return `${at} changed a binding`;
      }
      const dx = new Set((x.dyn ?? []).map((d) => d[0]));
      const dy = new Set((y.dyn ?? []).map((d) => d[0]));
      if ([...dx].join() !== [...dy].join()) return `${at} changed its per-step words`;
      const px = x.params, py = y.params;
      if ((px === null) !== (py === null) || (px && py && px.length !== py.length)) {
        return `${at} changed its parameters`;
      }
      if (px && py) {
        for (let w = 0; w < px.length; w++) {
          if (!dx.has(w) && px[w] !== py[w]) {
            return `${at}: parameter word ${w} changed (${px[w]} → ${py[w]}) ` +
              `and is not a per-step value the trace can recompute`;
          }
        }
      }
    } else if (x.kind === "copy" && y.kind === "copy") {
      if (x.srcOffset !== y.srcOffset || x.dstOffset !== y.dstOffset || x.bytes !== y.bytes) {
        return `${at} changed its range`;
      }
    } else if (x.kind === "upload" && y.kind === "upload") {
      if (x.data.length !== y.data.length || x.data.some((v, j) => !Object.is(v, y.data[j]))) {
        return `${at} uploaded different data`;
      }
    }
    const bx = buffersOf(x), by = buffersOf(y);
    for (let j = 0; j < bx.length; j++) {
      if (!same(bx[j]!, by[j]!)) return `${at} used a different buffer`;
    }
  }
  for (const x of a.liveOut) {
    if (!b.released.has(x)) return "the step keeps new device state alive every time";
  }
  return null;
}

/**
 * A replayable step (made by `GpuRuntime.buildTrace`; replayed by `GpuRuntime.replayTrace`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { GpuRuntime } from "./runtime.ts";
 * const rt = await GpuRuntime.create().catch(() => null);
 * if (rt) {
 *   const k = rt.kernel("example:inc", `
 *     @group(0) @binding(0) var<storage, read_write> o: array<f32>;
 *     struct P { v: array<vec4<u32>, 1> }
 *     @group(0) @binding(1) var<uniform> p: P;
 *     @compute @workgroup_size(1) fn main() { o[0] = o[0] + f32(p.v[0].x); }`);
 *   const acc = rt.acquire(4);
 *   rt.dispatch(k, [acc], [0], [1, 1, 1]); // o[0] = 0 + 0 (pooled buffers start zeroed)
 *   let n = 0;
 *   rt.beginCapture([]);
 *   rt.dispatch(k, [acc], [1], [1, 1, 1], [[0, () => ++n]]); // adds a per-step value
 *   const trace = rt.buildTrace(rt.endCapture());
 *   n = 1;
 *   rt.replayTrace(trace, { step: 2 }, []); // adds 2
 *   rt.replayTrace(trace, { step: 3 }, []); // adds 3
 *   assert.equal(new Float32Array(await rt.read(acc, 4))[0], 6);
 *   trace.dispose();
 *   rt.release(acc);
 *   rt.destroy();
 * }
 * ```
 */
export class StepTrace {
  /**
   * The trace's own uniform buffers (its parameter words at fixed offsets), a ring of them:
   * a replay writes the next one, so consecutive replays share a submit instead of each
   * waiting for the last one's words to be consumed.
   */
  readonly uniforms: GPUBuffer[];
  /** Submit count at each ring slot's last use (the runtime flushes before reusing a slot). */
  readonly slotSubmit: number[];
  /** Dispatches per replay. */
  readonly dispatches: number;
  #slot = 0;
  /** Each input's private buffer, in capture order. */
  readonly inputTargets: GPUBuffer[];
  /** @internal The commands with their bind groups. */
  readonly encoded: Encoded[] = [];
  #words: Uint32Array;
  #plan: ({ kind: "host"; fn: (env: TraceEnv) => void } | {
    kind: "dyn";
    at: number;
    dyn: DynWord[];
  })[] = [];
  #watched: Set<GPUBuffer>;
  #parts: TraceParts;
  #pooled: GPUBuffer[];
  #destroy: GPUBuffer[] = [];
  #invalid: string | null = null;

  /** @internal Use `GpuRuntime.buildTrace`. */
  constructor(parts: TraceParts) {
    this.#parts = parts;
    const c = parts.capture;
    const sub = (b: GPUBuffer) => parts.inputCopies.get(b) ?? b;
    this.inputTargets = c.inputs.map((b) => parts.inputCopies.get(b)!);
    this.#pooled = [...c.owned, ...this.inputTargets];
    this.#watched = new Set([...c.liveOut, ...c.external]);
    let words = 0;
    const offsets: number[] = [];
    for (const op of c.ops) {
      if (op.kind !== "dispatch" || !op.params) continue;
      offsets.push(words);
      const n = Math.max(4, Math.ceil(op.params.length / 4) * 4);
      words += Math.ceil((n * 4) / parts.align) * parts.align / 4;
    }
    this.#words = new Uint32Array(Math.max(words, 4));
    this.uniforms = Array.from(
      { length: RING },
      () => parts.device.createBuffer({ size: this.#words.byteLength, usage: 0x40 | 0x08 }),
    );
    this.slotSubmit = this.uniforms.map(() => -1);
    this.#destroy.push(...this.uniforms);
    let u = 0;
    for (const op of c.ops) {
      if (op.kind === "host") this.#plan.push({ kind: "host", fn: op.fn });
      else if (op.kind === "copy") {
        this.encoded.push({ ...op, src: sub(op.src), dst: sub(op.dst) });
      } else if (op.kind === "upload") {
        const st = parts.staging(op.data);
        this.#destroy.push(st);
        this.encoded.push({
          kind: "copy",
          src: st,
          srcOffset: 0,
          dst: sub(op.buf),
          dstOffset: 0,
          bytes: op.data.byteLength,
        });
      } else {
        const entries: GPUBindGroupEntry[] = op.bufs.map((b, i) => ({
          binding: i,
          resource: b instanceof GPUBuffer ? { buffer: sub(b) } : { ...b, buffer: sub(b.buffer) },
        }));
        if (op.params) {
          const at = offsets[u++]!;
          this.#words.set(op.params, at);
          const n = Math.max(4, Math.ceil(op.params.length / 4) * 4);
          if (op.dyn) this.#plan.push({ kind: "dyn", at, dyn: op.dyn });
          const bgs = this.uniforms.map((buffer) =>
            parts.device.createBindGroup({
              layout: op.k.layout,
              entries: [
                ...entries,
                { binding: op.bufs.length, resource: { buffer, offset: at * 4, size: n * 4 } },
              ],
            })
          );
          this.encoded.push({ kind: "dispatch", k: op.k, bgs, grid: op.grid });
        } else {
          const bg = parts.device.createBindGroup({ layout: op.k.layout, entries });
          this.encoded.push({
            kind: "dispatch",
            k: op.k,
            bgs: this.uniforms.map(() => bg),
            grid: op.grid,
          });
        }
      }
    }
    this.dispatches = this.encoded.filter((e) => e.kind === "dispatch").length;
  }

  /** @internal The ring slot the next replay uses (advancing it). */
  nextSlot(): number {
    const i = this.#slot;
    this.#slot = (i + 1) % RING;
    return i;
  }

  /** Whether the trace can still be replayed. */
  get valid(): boolean {
    return this.#invalid === null;
  }

  /** Why the trace was dropped (null while valid). */
  get invalidReason(): string | null {
    return this.#invalid;
  }

  /** Buffers the trace holds pinned (its temporaries and input copies). */
  pinned(): readonly GPUBuffer[] {
    return this.#pooled;
  }

  /** @internal Whether freeing `b` must drop the trace. */
  watches(b: GPUBuffer): boolean {
    return this.#invalid === null && this.#watched.has(b);
  }

  /** @internal Redo the host effects for `env` and return the parameter words to upload. */
  prepare(env: TraceEnv): Uint32Array {
    if (this.#invalid !== null) throw new Error(`Cannot replay a dropped trace (${this.#invalid})`);
    for (const p of this.#plan) {
      if (p.kind === "host") p.fn(env);
      else for (const [i, f] of p.dyn) this.#words[p.at + i] = f(env) >>> 0;
    }
    return this.#words;
  }

  /** @internal Drop the trace: its buffers go back to the pool. */
  invalidate(why: string): void {
    if (this.#invalid !== null) return;
    this.#invalid = why;
    this.#parts.release(this.#pooled, this.#destroy);
    this.#pooled = [];
    this.#destroy = [];
    this.#watched.clear();
    this.#parts.onDispose(this);
  }

  /** Release the trace's buffers (it cannot be replayed afterwards). */
  dispose(): void {
    this.invalidate("disposed");
  }
}
