/**
 * @file `logSumExpAdd`: log Σ exp(M + v) along one axis of a matrix, with v broadcast along
 * that axis, in one pass over M (the half-iteration of log-domain Sinkhorn). The composite
 * `logSumExp(add(M, v))` materialises M + v and then reads it four times (max, subtract, exp,
 * sum); the backend method streams M once with an online max/sum (one kernel on WebGPU).
 * @module
 */
import {
  attachRules,
  backendOf,
  binary,
  reduce,
  reshape,
  sumTo,
  Tensor,
  unary,
} from "../tensor.ts";
import { normAxis } from "../shape.ts";
import { checkNumber, fmtShape } from "../_util.ts";

/** Options for {@link logSumExpAdd}: the result is `scale · log Σ exp(m + v) + shift`. */
export interface LogSumExpAddOptions {
  /** Multiplies the log-sum-exp (default 1). */
  scale?: number;
  /** Added last (default 0). */
  shift?: number;
}

/**
 * log Σ exp(m + v) along `axis` of a 2-D `m [n, k]`, where `v` varies along that axis only:
 * for axis 1 (or −1) `out[i] = log Σ_j exp(m[i, j] + v[j])` with `v` of shape `[k]` or `[1, k]`;
 * for axis 0 (or −2) `out[j] = log Σ_i exp(m[i, j] + v[i])` with `v` of shape `[n, 1]`.
 * Equals `logSumExp(add(m, v), axis, keepdims)` within f32 rounding, but reads `m` once.
 * A NaN term gives NaN; a line of all −∞ gives −∞; a +∞ term gives +∞. `opts.scale` and
 * `opts.shift` apply `scale · lse + shift` in the same kernel (Sinkhorn's f = log a − LSE).
 * Differentiable in both modes: the gradient of m is softmax(m + v) along the axis times the
 * cotangent, and that of v the same summed over the other axis.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { logSumExpAdd, tensor } from "../../mod.ts";
 * const m = tensor([[0, 0], [1, 2]]);
 * const close = (a: Float32Array, b: number[]) =>
 *   b.forEach((v, i) => assert.ok(Math.abs(a[i]! - v) < 1e-5, `${a[i]} vs ${v}`));
 * const e = Math.E;
 * close(await logSumExpAdd(m, tensor([[0, 1]]), 1).data(), [Math.log(1 + e), Math.log(e + e ** 3)]);
 * close(await logSumExpAdd(m, tensor([[0], [1]]), 0, true).data(), [
 *   Math.log(1 + e ** 2),
 *   Math.log(1 + e ** 3),
 * ]);
 * ```
 */
export function logSumExpAdd(
  m: Tensor,
  v: Tensor,
  axis: number,
  keepdims = false,
  opts: LogSumExpAddOptions = {},
): Tensor {
  if (!(m instanceof Tensor) || m.rank !== 2) {
    throw new RangeError(
      `Expected the logSumExpAdd matrix to be a 2-D tensor but found ${
        m instanceof Tensor ? fmtShape(m.shape) : typeof m
      }`,
    );
  }
  if (!(v instanceof Tensor)) {
    throw new TypeError(`Expected the logSumExpAdd vector to be a Tensor but found ${typeof v}`);
  }
  const ax = normAxis(axis, 2, m.shape) as 0 | 1;
  const [rows, cols] = m.shape as [number, number];
  const padded = v.rank === 1 ? [1, v.shape[0]!] : v.shape;
  if (v.rank > 2 || padded[ax] !== m.shape[ax] || padded[1 - ax] !== 1) {
    const want = ax === 1 ? `[${cols}] or [1, ${cols}]` : `[${rows}, 1]`;
    throw new RangeError(
      `Expected the logSumExpAdd vector for axis ${axis} of a ${
        fmtShape(m.shape)
      } matrix to have shape ${want} but found ${fmtShape(v.shape)}`,
    );
  }
  const scale = checkNumber("logSumExpAdd scale", opts.scale ?? 1);
  const shift = checkNumber("logSumExpAdd shift", opts.shift ?? 0);
  const plain = scale === 1 && shift === 0;
  const be = backendOf([m, v]);
  const keptShape = ax === 1 ? [rows, 1] : [1, cols];
  const outShape = keepdims ? keptShape : [ax === 1 ? rows : cols];
  // Output first, then rules: forward mode runs the jvp rule inside attachRules, and the
  // rules read the output.
  const out = Tensor._fromStorage(
    be.logSumExpAdd(m.storage, v.storage, rows, cols, ax, scale, shift),
    outShape,
    be,
  );
  // softmax(m + v) along the axis: exp(m + v − lse), with lse = out unless an epilogue was
  // applied (then recomputed rather than (out − shift) / scale, which loses digits or divides
  // by 0). Built from primitives, so every derivative order stays exact.
  const weights = () => {
    const lse = plain ? reshape(out, keptShape) : logSumExpAdd(m, v, ax, true);
    return unary("exp", binary("sub", binary("add", m, v), lse));
  };
  const scaled = (g: Tensor) => (scale === 1 ? g : unary("affine", g, scale, 0));
  attachRules(out, [m, v], {
    vjp: (g, need) => {
      const dm = binary("mul", weights(), reshape(scaled(g), keptShape));
      return [need[0] === false ? null : dm, need[1] === false ? null : sumTo(dm, v.shape)];
    },
    jvp: ([tm, tv]) => {
      const t = tm && tv ? binary("add", tm, tv) : (tm ?? tv)!;
      return scaled(reduce("sum", binary("mul", weights(), t), ax, keepdims));
    },
  });
  return out;
}
