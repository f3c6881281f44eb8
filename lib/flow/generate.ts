/**
 * @file Generating samples from a velocity field in batches: N(0, I) noise at t = 0,
 * integrated to data at t = 1 with any sampler, with optional class labels and
 * classifier-free guidance, collected on the host. Shared by the `sample` and `eval` tasks
 * and by trainers' sample figures.
 * @module
 */
import { Generator } from "../random.ts";
import { tensor } from "../ops/ops.ts";
import { checkInt } from "../_util.ts";
import type { VelocityFn } from "./paths.ts";
import { integrate, type IntegrateResult, type SamplerMethod } from "./samplers.ts";
import { classifierFreeGuidance } from "./guidance.ts";

/** Options of {@linkcode generateSamples}. */
export interface GenerateOptions {
  /** Number of samples. */
  n: number;
  /** Integration method. */
  sampler: SamplerMethod;
  /** Steps of the fixed-step methods. */
  steps: number;
  /** Seed of the source noise (and Euler–Maruyama noise). */
  seed: number;
  /** dopri5 tolerances. */
  atol?: number;
  /** dopri5 relative tolerance. */
  rtol?: number;
  /**
   * The model's "no class" label when it is class-conditional (e.g. 10 for Fashion-MNIST);
   * omit for an unconditional model.
   */
  nullLabel?: number;
  /** Labels [n] for a class-conditional model (default: the null label). */
  labels?: Float32Array;
  /** Classifier-free guidance scale (1: none). */
  cfgScale?: number;
  /** Guidance interval in our convention (t = 1 is data). */
  guidanceLow?: number;
  /** Upper end of the guidance interval. */
  guidanceHigh?: number;
  /** Keep the trajectory (for straightness; only when everything fits one batch). */
  record?: boolean;
  /** Rows per integration batch (default: all at once). */
  batch?: number;
  /** Called after each batch with the rows done so far and `n` (for progress reports). */
  onBatch?: (done: number, total: number) => void;
}

/** Samples on the host plus what the integration cost. */
export interface Generated {
  /** n × prod(dataShape) values. */
  x: Float32Array;
  /** Velocity evaluations per sample (per batch). */
  nfe: number;
  /** The integration result of the single batch when `record` was set. */
  recorded?: IntegrateResult;
}

/**
 * Integrate `v` from N(0, I) noise (t = 0) to data (t = 1), in batches. With `record`, the
 * caller owns `recorded.x` and `recorded.trajectory` (see {@linkcode disposeRecorded}).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { generateSamples } from "../../mod.ts";
 * // v = −x: one Euler step from x0 lands on x0 − x0 = 0.
 * const g = await generateSamples((x) => x.mul(-1), [2], { n: 3, sampler: "euler", steps: 1, seed: 0 });
 * assert.deepEqual([...g.x], [0, 0, 0, 0, 0, 0]);
 * assert.equal(g.nfe, 1);
 * // Progress per batch: rows done so far.
 * const seen: number[] = [];
 * await generateSamples((x) => x, [2], {
 *   n: 5, sampler: "euler", steps: 1, seed: 0, batch: 2, onBatch: (d) => seen.push(d),
 * });
 * assert.deepEqual(seen, [2, 4, 5]);
 * ```
 */
export async function generateSamples(
  velocity: VelocityFn,
  dataShape: readonly number[],
  o: GenerateOptions,
): Promise<Generated> {
  checkInt("number of samples", o.n, 1);
  const conditional = o.nullLabel !== undefined;
  let v = velocity;
  const scale = o.cfgScale ?? 1;
  if (conditional && scale !== 1) {
    v = classifierFreeGuidance(v, {
      scale,
      nullLabel: o.nullLabel!,
      low: o.guidanceLow ?? 0,
      high: o.guidanceHigh ?? 1,
    });
  }
  const gen = new Generator(o.seed);
  const row = dataShape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(o.n * row);
  const batch = o.record ? o.n : Math.max(1, Math.min(o.n, o.batch ?? o.n));
  let nfe = 0;
  let recorded: IntegrateResult | undefined;
  for (let s = 0; s < o.n; s += batch) {
    const b = Math.min(batch, o.n - s);
    const x0 = gen.normal([b, ...dataShape]);
    const cond = conditional
      ? tensor(o.labels ? o.labels.subarray(s, s + b) : new Float32Array(b).fill(o.nullLabel!))
      : undefined;
    try {
      const res = await integrate(v, x0, {
        method: o.sampler,
        steps: o.steps,
        atol: o.atol,
        rtol: o.rtol,
        cond,
        record: o.record,
        generator: gen,
      });
      nfe = Math.max(nfe, res.nfe);
      out.set(await res.x.data(), s * row);
      if (o.record) recorded = res;
      else res.x.dispose();
    } finally {
      x0.dispose();
      cond?.dispose();
    }
    o.onBatch?.(s + b, o.n);
  }
  return recorded ? { x: out, nfe, recorded } : { x: out, nfe };
}

/**
 * Dispose every tensor of a recorded integration.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { disposeRecorded, generateSamples } from "../../mod.ts";
 * const g = await generateSamples((x) => x, [2], { n: 2, sampler: "euler", steps: 3, seed: 0, record: true });
 * assert.equal(g.recorded!.trajectory!.length, 4);
 * disposeRecorded(g.recorded);
 * ```
 */
export function disposeRecorded(r: IntegrateResult | undefined): void {
  if (!r) return;
  r.x.dispose();
  r.trajectory?.forEach((t) => t.dispose());
}
