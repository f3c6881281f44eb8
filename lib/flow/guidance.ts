/**
 * @file Classifier-free guidance with a guidance interval, as a velocity-function wrapper.
 * @module
 */
import { Tensor, tidy } from "../tensor.ts";
import {
  add,
  concat,
  full,
  greaterEqual,
  lessEqual,
  mul,
  reshape,
  split,
  sub,
  where,
} from "../ops/ops.ts";
import { checkNumber } from "../_util.ts";
import type { VelocityFn } from "./paths.ts";

/** Options for {@link classifierFreeGuidance}. */
export interface GuidanceOptions {
  /** Guidance scale s: v = v_u + s·(v_c − v_u); 1 is plain conditional sampling. */
  scale: number;
  /** The label the model was trained with for "no condition" (e.g. 1000 for ImageNet, 10 for Fashion-MNIST). */
  nullLabel: number;
  /** Guidance applies only for low ≤ t ≤ high, in our convention (t = 1 is data). Default 0. */
  low?: number;
  /** Upper end of the guidance interval. Default 1. */
  high?: number;
}

/**
 * Wrap a label-conditioned velocity into a guided one, `(x, t, y) => v_u + s·(v_c − v_u)`,
 * evaluated with one batched call on [x; x] with labels [y; null]. Outside [low, high] the
 * conditional velocity v_c is returned. The wrapper is made of tensor ops and never reads back.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { classifierFreeGuidance, tensor } from "../../mod.ts";
 * // A toy field whose output is its label.
 * const v = (x: ReturnType<typeof tensor>, _t: unknown, y?: ReturnType<typeof tensor>) =>
 *   x.mul(0).add(y!.reshape([-1, 1]));
 * const g = classifierFreeGuidance(v, { scale: 2, nullLabel: 0 });
 * // v_u + s·(v_c − v_u) = 0 + 2·(3 − 0)
 * assert.deepEqual([...await g(tensor([[0]]), tensor([0.5]), tensor([3])).data()], [6]);
 * ```
 */
export function classifierFreeGuidance(velocity: VelocityFn, opts: GuidanceOptions): VelocityFn {
  if (typeof velocity !== "function") {
    throw new TypeError("Expected velocity to be a function (x, t, cond?) => Tensor");
  }
  const scale = checkNumber("guidance scale", opts.scale);
  const nullLabel = checkNumber("null label", opts.nullLabel);
  const low = checkNumber("guidance low", opts.low ?? 0);
  const high = checkNumber("guidance high", opts.high ?? 1, low);
  return (x: Tensor, t: Tensor, y?: Tensor): Tensor => {
    if (!(y instanceof Tensor)) {
      throw new TypeError("Expected classifier-free guidance to be called with labels y [B]");
    }
    const b = x.shape[0]!;
    if (y.size !== b || t.size !== b) {
      throw new RangeError(
        `Expected t and y of shape [${b}] but found [${t.size}] and [${y.size}]`,
      );
    }
    return tidy(() => {
      const xx = concat([x, x], 0);
      const tt = concat([reshape(t, [b]), reshape(t, [b])], 0);
      const yy = concat([reshape(y, [b]), full([b], nullLabel)], 0);
      const out = velocity(xx, tt, yy);
      const [vc, vu] = split(out, [b, b], 0) as [Tensor, Tensor];
      const guided = add(vu, mul(sub(vc, vu), scale));
      if (low <= 0 && high >= 1) return guided;
      const tb = reshape(t, [b, ...new Array<number>(x.rank - 1).fill(1)]);
      const on = mul(greaterEqual(tb, low), lessEqual(tb, high));
      return where(on, guided, vc);
    });
  };
}

/**
 * Convert a guidance interval given in REPA/StableVelocity's flipped convention (t_ref = 0 is
 * data, 1 is noise) to ours: t = 1 − t_ref, so [low_ref, high_ref] ↦ [1 − high_ref, 1 − low_ref].
 * REPA's `--guidance-high 0.7` (guidance for t_ref ≤ 0.7) is our t ≥ 0.3.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { guidanceIntervalFromReference } from "../../mod.ts";
 * const { low, high } = guidanceIntervalFromReference({ low: 0, high: 0.7 });
 * // The reference's t (1 = noise) interval [0, 0.7] is ours [1 − 0.7, 1 − 0].
 * assert.ok(Math.abs(low - 0.3) < 1e-12);
 * assert.equal(high, 1);
 * ```
 */
export function guidanceIntervalFromReference(ref: { low?: number; high?: number }): {
  low: number;
  high: number;
} {
  const lo = checkNumber("reference guidance low", ref.low ?? 0, 0, 1);
  const hi = checkNumber("reference guidance high", ref.high ?? 1, lo, 1);
  return { low: 1 - hi, high: 1 - lo };
}
