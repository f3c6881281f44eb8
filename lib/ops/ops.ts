/**
 * @file The op vocabulary users call: arithmetic with scalars, reductions, activations,
 * softmax, layer norm, distances, shape helpers, and tensor creation. Everything here is
 * composed from the primitives in lib/tensor.ts, so it is differentiable in both modes.
 * @module
 */
import {
  add,
  binary,
  broadcastTo,
  concat,
  div,
  gather,
  matmul,
  maximum,
  mean,
  minimum,
  mul,
  padSlice,
  pow,
  reduce,
  reshape,
  scatterAdd,
  slice,
  stopGradient,
  sub,
  sumTo,
  Tensor,
  tidy,
  transpose,
  unary,
  where,
} from "../tensor.ts";
import { checkShape, normAxes, normAxis, sizeOf } from "../shape.ts";
import { fmtShape } from "../_util.ts";
import { getBackend } from "../backend/select.ts";
import type { Backend } from "../backend/backend.ts";

// The primitives and the scalar arithmetic Tensor methods use live in lib/tensor.ts.
export {
  add,
  binary,
  broadcastTo,
  concat,
  div,
  gather,
  matmul,
  maximum,
  mean,
  minimum,
  mul,
  padSlice,
  pow,
  reduce,
  reshape,
  scatterAdd,
  slice,
  stopGradient,
  sub,
  sumTo,
  transpose,
  unary,
  where,
};

// Composites run inside tidy so that only their result outlives the call: a caller who
// disposes what it holds (outside any tidy) must not leak the intermediates, or internal
// reshapes that pin an input's storage. Inside valueAndGrad/jvp, tidy keeps what the tape
// and the tangents still need (see tensor.ts).
/** Axes to reduce over: one axis, several, or all (undefined). Negative axes count from the end. */
export type Axes = number | readonly number[] | undefined;

// ---------------------------------------------------------------- creation

/** Nested numeric arrays accepted by `tensor`. */
export type NestedArray = number | readonly NestedArray[];

function flatten(data: NestedArray, shape: number[], out: number[], depth: number): void {
  const ragged = () =>
    new TypeError(
      `Expected tensor data to be a rectangular nested array but found an entry at depth ${depth} ` +
        `that does not fit the shape ${fmtShape(shape)} of the entries before it`,
    );
  if (typeof data === "number") {
    // Every number sits at the depth the first one fixed: [[1, 2], 3] is ragged.
    if (depth !== shape.length) throw ragged();
    out.push(data);
    return;
  }
  if (shape.length <= depth) {
    // A new axis may only appear before the first number: [[1, 2], [3, [4]]] is ragged.
    if (out.length > 0) throw ragged();
    shape.push(data.length);
  } else if (shape[depth] !== data.length) throw ragged();
  for (const d of data) flatten(d, shape, out, depth + 1);
}

/**
 * Create a tensor from numbers, a nested array or a typed array, with an optional shape.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor } from "../../mod.ts";
 * const a = tensor([[1, 2], [3, 4]]); // shape [2, 2]
 * const b = tensor(new Float32Array([1, 2, 3, 4]), [4, 1]);
 * assert.deepEqual([...a.shape], [2, 2]);
 * assert.deepEqual([...b.shape], [4, 1]);
 * assert.deepEqual([...await a.data()], [1, 2, 3, 4]); // row-major
 * assert.deepEqual(await a.array(), [[1, 2], [3, 4]]);
 * ```
 */
export function tensor(
  data: NestedArray | Float32Array | ArrayLike<number>,
  shape?: readonly number[],
  backend: Backend = getBackend(),
): Tensor {
  let flat: Float32Array;
  let inferred: number[];
  if (data instanceof Float32Array || ArrayBuffer.isView(data)) {
    flat = new Float32Array(data as ArrayLike<number>);
    inferred = [flat.length];
  } else if (typeof data === "number") {
    flat = new Float32Array([data]);
    inferred = [];
  } else if (Array.isArray(data)) {
    const out: number[] = [];
    inferred = [];
    flatten(data as NestedArray, inferred, out, 0);
    if (data.length === 0) inferred = [0];
    flat = new Float32Array(out);
  } else {
    throw new TypeError(`Expected tensor data to be numbers or a Float32Array but found ${data}`);
  }
  const s = shape ? checkShape(shape) : inferred;
  if (sizeOf(s) !== flat.length) {
    throw new RangeError(
      `Cannot make a tensor of shape ${fmtShape(s)} from ${flat.length} values`,
    );
  }
  return Tensor._fromStorage(backend.upload(flat), s, backend);
}

/**
 * A tensor filled with `value`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { full } from "../../mod.ts";
 * const x = full([2, 3], 7);
 * assert.deepEqual([...x.shape], [2, 3]);
 * assert.deepEqual([...await x.data()], [7, 7, 7, 7, 7, 7]);
 * ```
 */
export function full(
  shape: readonly number[],
  value: number,
  backend: Backend = getBackend(),
): Tensor {
  const s = checkShape(shape);
  return Tensor._fromStorage(backend.fill(sizeOf(s), value), s, backend);
}

/**
 * A tensor of zeros.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { zeros } from "../../mod.ts";
 * const x = zeros([2, 3]);
 * assert.deepEqual([...await x.data()], [0, 0, 0, 0, 0, 0]);
 * ```
 */
export function zeros(shape: readonly number[], backend?: Backend): Tensor {
  return full(shape, 0, backend);
}

/**
 * A tensor of ones.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ones } from "../../mod.ts";
 * const x = ones([4]);
 * assert.deepEqual([...await x.data()], [1, 1, 1, 1]);
 * ```
 */
export function ones(shape: readonly number[], backend?: Backend): Tensor {
  return full(shape, 1, backend);
}

/**
 * Zeros with the shape and backend of `x`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ones, zerosLike } from "../../mod.ts";
 * const z = zerosLike(ones([2]));
 * assert.deepEqual([...await z.data()], [0, 0]);
 * ```
 */
export function zerosLike(x: Tensor): Tensor {
  return full(x.shape, 0, x.backend);
}

/**
 * Ones with the shape and backend of `x`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { onesLike, zeros } from "../../mod.ts";
 * const o = onesLike(zeros([2]));
 * assert.deepEqual([...await o.data()], [1, 1]);
 * ```
 */
export function onesLike(x: Tensor): Tensor {
  return full(x.shape, 1, x.backend);
}

/**
 * `[start, start + step, …)` below `stop`; with one argument, `[0, n)`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { arange } from "../../mod.ts";
 * assert.deepEqual([...await arange(2, 8, 2).data()], [2, 4, 6]); // stop excluded
 * assert.deepEqual([...await arange(3).data()], [0, 1, 2]);
 * ```
 */
export function arange(start: number, stop?: number, step = 1): Tensor {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new RangeError("Expected step to be nonzero but found 0");
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const be = getBackend();
  return Tensor._fromStorage(be.iota(n, start, step), [n], be);
}

/**
 * `num` evenly spaced values from `start` to `stop` inclusive.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { linspace } from "../../mod.ts";
 * assert.deepEqual([...await linspace(0, 1, 5).data()], [0, 0.25, 0.5, 0.75, 1]); // both ends
 * ```
 */
export function linspace(start: number, stop: number, num: number): Tensor {
  if (!Number.isInteger(num) || num < 1) {
    throw new RangeError(`Expected num to be an integer >= 1 but found ${num}`);
  }
  const vals = new Float32Array(num);
  for (let i = 0; i < num; i++) {
    vals[i] = num === 1 ? start : start + (stop - start) * i / (num - 1);
  }
  return tensor(vals);
}

/**
 * The n×n identity matrix.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { eye } from "../../mod.ts";
 * const i3 = eye(3);
 * assert.deepEqual(await i3.array(), [[1, 0, 0], [0, 1, 0], [0, 0, 1]]);
 * ```
 */
export function eye(n: number): Tensor {
  const v = new Float32Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  return tensor(v, [n, n]);
}

/**
 * A copy of `x` on another backend (for comparing backends, or moving data).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { backendByName, tensor, toBackend } from "../../mod.ts";
 * const c = await toBackend(tensor([1, 2]), backendByName("cpu")!);
 * assert.equal(c.backend.name, "cpu");
 * assert.deepEqual([...c.dataSync()], [1, 2]);
 * ```
 */
export async function toBackend(x: Tensor, backend: Backend): Promise<Tensor> {
  return tensor(await x.data(), x.shape, backend);
}

// ---------------------------------------------------------------- arithmetic

/**
 * Clamp into [lo, hi].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { clamp, tensor } from "../../mod.ts";
 * const y = clamp(tensor([-5, 0, 5]), -1, 1);
 * assert.deepEqual([...await y.data()], [-1, 0, 1]);
 * ```
 */
export function clamp(x: Tensor, lo = -Infinity, hi = Infinity): Tensor {
  return unary("clamp", x, lo, hi);
}

/** −x. @example ```ts
 * import { neg, tensor } from "../../mod.ts"; neg(tensor([1]));
 * ``` */
export const neg = (x: Tensor): Tensor => unary("neg", x);
/** eˣ. @example ```ts
 * import { exp, tensor } from "../../mod.ts"; exp(tensor([1]));
 * ``` */
export const exp = (x: Tensor): Tensor => unary("exp", x);
/** ln x. @example ```ts
 * import { log, tensor } from "../../mod.ts"; log(tensor([1]));
 * ``` */
export const log = (x: Tensor): Tensor => unary("log", x);
/** √x. @example ```ts
 * import { sqrt, tensor } from "../../mod.ts"; sqrt(tensor([4]));
 * ``` */
export const sqrt = (x: Tensor): Tensor => unary("sqrt", x);
/** 1/√x. @example ```ts
 * import { rsqrt, tensor } from "../../mod.ts"; rsqrt(tensor([4]));
 * ``` */
export const rsqrt = (x: Tensor): Tensor => unary("rsqrt", x);
/** sin x. @example ```ts
 * import { sin, tensor } from "../../mod.ts"; sin(tensor([1]));
 * ``` */
export const sin = (x: Tensor): Tensor => unary("sin", x);
/** cos x. @example ```ts
 * import { cos, tensor } from "../../mod.ts"; cos(tensor([1]));
 * ``` */
export const cos = (x: Tensor): Tensor => unary("cos", x);
/** tanh x. @example ```ts
 * import { tanh, tensor } from "../../mod.ts"; tanh(tensor([1]));
 * ``` */
export const tanh = (x: Tensor): Tensor => unary("tanh", x);
/** Logistic sigmoid. @example ```ts
 * import { sigmoid, tensor } from "../../mod.ts"; sigmoid(tensor([1]));
 * ``` */
export const sigmoid = (x: Tensor): Tensor => unary("sigmoid", x);
/** x·sigmoid(x). @example ```ts
 * import { silu, tensor } from "../../mod.ts"; silu(tensor([1]));
 * ``` */
export const silu = (x: Tensor): Tensor => unary("silu", x);
/** Exact (erf) GELU, as torch.nn.GELU(). @example ```ts
 * import { gelu, tensor } from "../../mod.ts"; gelu(tensor([1]));
 * ``` */
export const gelu = (x: Tensor): Tensor => unary("gelu", x);
/** max(x, 0). @example ```ts
 * import { relu, tensor } from "../../mod.ts"; relu(tensor([-1, 1]));
 * ``` */
export const relu = (x: Tensor): Tensor => unary("relu", x);
/** |x|. @example ```ts
 * import { abs, tensor } from "../../mod.ts"; abs(tensor([-1]));
 * ``` */
export const abs = (x: Tensor): Tensor => unary("abs", x);
/** sign(x). @example ```ts
 * import { sign, tensor } from "../../mod.ts"; sign(tensor([-3]));
 * ``` */
export const sign = (x: Tensor): Tensor => unary("sign", x);
/** x². @example ```ts
 * import { square, tensor } from "../../mod.ts"; square(tensor([3]));
 * ``` */
export const square = (x: Tensor): Tensor => unary("square", x);
/** 1/x. @example ```ts
 * import { reciprocal, tensor } from "../../mod.ts"; reciprocal(tensor([2]));
 * ``` */
export const reciprocal = (x: Tensor): Tensor => unary("reciprocal", x);
/** floor(x). @example ```ts
 * import { floor, tensor } from "../../mod.ts"; floor(tensor([1.5]));
 * ``` */
export const floor = (x: Tensor): Tensor => unary("floor", x);
/** erf(x) (A&S 7.1.26, |error| < 1.5e-7). @example ```ts
 * import { erf, tensor } from "../../mod.ts"; erf(tensor([0.5]));
 * ``` */
export const erf = (x: Tensor): Tensor => unary("erf", x);

function cmp(op: "eq" | "ne" | "lt" | "le" | "gt" | "ge", a: Tensor, b: Tensor | number): Tensor {
  return tidy(() => {
    if (typeof b === "number") {
      const m: Record<string, "gtScalar" | "geScalar" | "ltScalar" | "leScalar" | "eqScalar"> = {
        gt: "gtScalar",
        ge: "geScalar",
        lt: "ltScalar",
        le: "leScalar",
        eq: "eqScalar",
      };
      if (op === "ne") return unary("affine", unary("eqScalar", a, b), -1, 1);
      return unary(m[op]!, a, b);
    }
    return binary(op, a, b);
  });
}
/** 1 where a > b else 0. @example ```ts
 * import { greater, tensor } from "../../mod.ts"; greater(tensor([1, 3]), 2);
 * ``` */
export const greater = (a: Tensor, b: Tensor | number): Tensor => cmp("gt", a, b);
/** 1 where a ≥ b else 0. @example ```ts
 * import { greaterEqual, tensor } from "../../mod.ts"; greaterEqual(tensor([1, 3]), 2);
 * ``` */
export const greaterEqual = (a: Tensor, b: Tensor | number): Tensor => cmp("ge", a, b);
/** 1 where a < b else 0. @example ```ts
 * import { less, tensor } from "../../mod.ts"; less(tensor([1, 3]), 2);
 * ``` */
export const less = (a: Tensor, b: Tensor | number): Tensor => cmp("lt", a, b);
/** 1 where a ≤ b else 0. @example ```ts
 * import { lessEqual, tensor } from "../../mod.ts"; lessEqual(tensor([1, 3]), 2);
 * ``` */
export const lessEqual = (a: Tensor, b: Tensor | number): Tensor => cmp("le", a, b);
/** 1 where a = b else 0. @example ```ts
 * import { equal, tensor } from "../../mod.ts"; equal(tensor([1, 3]), 3);
 * ``` */
export const equal = (a: Tensor, b: Tensor | number): Tensor => cmp("eq", a, b);
/** 1 where a ≠ b else 0. @example ```ts
 * import { notEqual, tensor } from "../../mod.ts"; notEqual(tensor([1, 3]), 3);
 * ``` */
export const notEqual = (a: Tensor, b: Tensor | number): Tensor => cmp("ne", a, b);

// ---------------------------------------------------------------- reductions

/**
 * Sum over axes (all by default).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sum, tensor } from "../../mod.ts";
 * assert.deepEqual([...await sum(tensor([[1, 2], [3, 4]]), 0).data()], [4, 6]); // column sums
 * assert.equal(await sum(tensor([[1, 2], [3, 4]])).item(), 10);
 * ```
 */
export function sum(x: Tensor, axes?: Axes, keepdims = false): Tensor {
  return reduce("sum", x, axes, keepdims);
}

/**
 * Maximum over axes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { max, tensor } from "../../mod.ts";
 * assert.equal(await max(tensor([1, 7, 3])).item(), 7);
 * ```
 */
export function max(x: Tensor, axes?: Axes, keepdims = false): Tensor {
  return reduce("max", x, axes, keepdims);
}

/**
 * Minimum over axes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { min, tensor } from "../../mod.ts";
 * assert.equal(await min(tensor([1, 7, 3])).item(), 1);
 * ```
 */
export function min(x: Tensor, axes?: Axes, keepdims = false): Tensor {
  return reduce("min", x, axes, keepdims);
}

/**
 * Index of the maximum along one axis (the flattened input when omitted).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { argmax, tensor } from "../../mod.ts";
 * assert.deepEqual([...await argmax(tensor([[1, 9], [8, 2]]), 1).data()], [1, 0]);
 * ```
 */
export function argmax(x: Tensor, axis?: number, keepdims = false): Tensor {
  return tidy(() => {
    if (axis === undefined) return reduce("argmax", reshape(x, [x.size]), 0, keepdims);
    return reduce("argmax", x, normAxis(axis, x.rank, x.shape), keepdims);
  });
}

/**
 * Index of the minimum along one axis (the flattened input when omitted).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { argmin, tensor } from "../../mod.ts";
 * assert.equal(await argmin(tensor([3, 1, 2])).item(), 1);
 * ```
 */
export function argmin(x: Tensor, axis?: number, keepdims = false): Tensor {
  return tidy(() => {
    if (axis === undefined) return reduce("argmin", reshape(x, [x.size]), 0, keepdims);
    return reduce("argmin", x, normAxis(axis, x.rank, x.shape), keepdims);
  });
}

/**
 * log Σ exp(x) over axes, computed stably (the max is subtracted first).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { logSumExp, tensor } from "../../mod.ts";
 * assert.ok(Math.abs(await logSumExp(tensor([0, 0])).item() - Math.LN2) < 1e-6); // ln(1 + 1)
 * // Stable for large inputs: ln(e^1000 + e^1000) = 1000 + ln 2.
 * assert.ok(Math.abs(await logSumExp(tensor([1000, 1000])).item() - (1000 + Math.LN2)) < 1e-3);
 * ```
 */
export function logSumExp(x: Tensor, axes?: Axes, keepdims = false): Tensor {
  return tidy(() => {
    const ax = normAxes(axes, x.shape);
    // The max is a constant shift: its gradient contributions cancel, so stop it.
    const m = stopGradient(reduce("max", x, ax, true));
    const mSafe = where(unary("isNan", unary("affine", m, 0, 0)), zerosLikeShape(m), m);
    const s = reduce("sum", unary("exp", binary("sub", x, mSafe)), ax, true);
    const r = binary("add", unary("log", s), mSafe);
    return keepdims ? r : reshape(r, x.shape.filter((_, i) => !ax.includes(i)));
  });
}

function zerosLikeShape(x: Tensor): Tensor {
  return full(x.shape, 0, x.backend);
}

/**
 * Variance over axes (population variance by default; `correction: 1` for the unbiased one).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor, variance } from "../../mod.ts";
 * // mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n = 4 (or n − 1 = 3).
 * assert.equal(await variance(tensor([1, 2, 3, 4])).item(), 1.25);
 * assert.ok(Math.abs(await variance(tensor([1, 2, 3, 4]), undefined, false, 1).item() - 5 / 3) < 1e-6);
 * ```
 */
export function variance(x: Tensor, axes?: Axes, keepdims = false, correction = 0): Tensor {
  return tidy(() => {
    const ax = normAxes(axes, x.shape);
    const n = ax.reduce((a, i) => a * x.shape[i]!, 1);
    const d = binary("sub", x, mean(x, ax, true));
    return unary(
      "affine",
      reduce("sum", unary("square", d), ax, keepdims),
      1 / (n - correction),
      0,
    );
  });
}

// ---------------------------------------------------------------- nn-style composites

/**
 * Softmax along an axis (default last).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { softmax, tensor } from "../../mod.ts";
 * assert.deepEqual([...await softmax(tensor([0, 0])).data()], [0.5, 0.5]);
 * const p = await softmax(tensor([0, Math.LN2])).data(); // weights 1 : 2
 * assert.ok(Math.abs(p[0]! - 1 / 3) < 1e-6 && Math.abs(p[1]! - 2 / 3) < 1e-6);
 * ```
 */
export function softmax(x: Tensor, axis = -1): Tensor {
  return tidy(() => {
    return unary("exp", logSoftmax(x, axis));
  });
}

/**
 * log softmax along an axis (default last).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { logSoftmax, tensor } from "../../mod.ts";
 * const y = await logSoftmax(tensor([1, 2, 3])).data();
 * const lse = Math.log(Math.E + Math.E ** 2 + Math.E ** 3);
 * [1, 2, 3].forEach((x, i) => assert.ok(Math.abs(y[i]! - (x - lse)) < 1e-6));
 * ```
 */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return tidy(() => {
    const ax = normAxis(axis, x.rank, x.shape);
    return binary("sub", x, logSumExp(x, ax, true));
  });
}

/**
 * Layer normalisation over the last axis: (x − mean) / √(var + eps), then optional affine.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { layerNorm, tensor } from "../../mod.ts";
 * const y = await layerNorm(tensor([[1, 2, 3]])).data();
 * // mean 2, (biased) variance 2/3, eps 1e-5: (x − 2)/√(2/3 + 1e-5)
 * const s = Math.sqrt(2 / 3 + 1e-5);
 * [-1 / s, 0, 1 / s].forEach((v, i) => assert.ok(Math.abs(y[i]! - v) < 1e-5));
 * ```
 */
export function layerNorm(x: Tensor, weight?: Tensor, bias?: Tensor, eps = 1e-5): Tensor {
  return tidy(() => {
    const ax = x.rank - 1;
    const mu = mean(x, ax, true);
    const d = binary("sub", x, mu);
    const v = mean(unary("square", d), ax, true);
    let y = binary("mul", d, unary("rsqrt", unary("affine", v, 1, eps)));
    if (weight) y = binary("mul", y, weight);
    if (bias) y = binary("add", y, bias);
    return y;
  });
}

/**
 * Pairwise squared Euclidean distances between rows: a [n, d], b [m, d] -> [n, m].
 * Uses ‖a‖² + ‖b‖² − 2abᵀ (one matmul) and clamps tiny negatives from rounding to 0.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { pairwiseSqDist, tensor } from "../../mod.ts";
 * const d = pairwiseSqDist(tensor([[0, 0], [1, 1]]), tensor([[3, 4]]));
 * assert.deepEqual(await d.array(), [[25], [13]]); // 3² + 4², 2² + 3²
 * ```
 */
export function pairwiseSqDist(a: Tensor, b: Tensor): Tensor {
  return tidy(() => {
    if (a.rank !== 2 || b.rank !== 2 || a.shape[1] !== b.shape[1]) {
      throw new RangeError(
        `pairwiseSqDist needs [n, d] and [m, d] but found ${fmtShape(a.shape)} and ${
          fmtShape(b.shape)
        }`,
      );
    }
    const a2 = reduce("sum", unary("square", a), 1, true); // [n, 1]
    const b2 = reshape(reduce("sum", unary("square", b), 1, true), [1, b.shape[0]!]); // [1, m]
    const ab = matmul(a, b, { transB: true }); // [n, m]
    return unary(
      "clamp",
      binary("sub", binary("add", a2, b2), unary("affine", ab, 2, 0)),
      0,
      Infinity,
    );
  });
}

// ---------------------------------------------------------------- shape helpers

/**
 * Insert a size-1 axis.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { expandDims, tensor } from "../../mod.ts";
 * assert.deepEqual([...expandDims(tensor([1, 2]), 0).shape], [1, 2]);
 * assert.deepEqual([...expandDims(tensor([1, 2]), -1).shape], [2, 1]);
 * ```
 */
export function expandDims(x: Tensor, axis: number): Tensor {
  const ax = axis < 0 ? axis + x.rank + 1 : axis;
  if (ax < 0 || ax > x.rank) {
    throw new RangeError(
      `Axis ${axis} is out of range for expandDims of shape ${fmtShape(x.shape)}`,
    );
  }
  const s = [...x.shape];
  s.splice(ax, 0, 1);
  return reshape(x, s);
}

/**
 * Remove size-1 axes (all of them, or those named).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { squeeze, zeros } from "../../mod.ts";
 * assert.deepEqual([...squeeze(zeros([1, 3, 1])).shape], [3]);
 * assert.deepEqual([...squeeze(zeros([1, 3, 1]), 0).shape], [3, 1]);
 * ```
 */
export function squeeze(x: Tensor, axes?: Axes): Tensor {
  const ax = axes === undefined
    ? x.shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0)
    : normAxes(axes, x.shape);
  for (const a of ax) {
    if (x.shape[a] !== 1) {
      throw new RangeError(`Cannot squeeze axis ${a} of shape ${fmtShape(x.shape)}: it is not 1`);
    }
  }
  return reshape(x, x.shape.filter((_, i) => !ax.includes(i)));
}

/**
 * Join tensors along a new axis.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { stack, tensor } from "../../mod.ts";
 * assert.deepEqual(await stack([tensor([1, 2]), tensor([3, 4])]).array(), [[1, 2], [3, 4]]);
 * assert.deepEqual(await stack([tensor([1, 2]), tensor([3, 4])], 1).array(), [[1, 3], [2, 4]]);
 * ```
 */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  return tidy(() => {
    return concat(xs.map((x) => expandDims(x, axis)), axis < 0 ? axis : axis);
  });
}

/**
 * Split into pieces of the given sizes along an axis.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { arange, split } from "../../mod.ts";
 * const [a, b] = split(arange(5), [2, 3]);
 * assert.deepEqual([...await a!.data()], [0, 1]);
 * assert.deepEqual([...await b!.data()], [2, 3, 4]);
 * ```
 */
export function split(x: Tensor, sizes: readonly number[], axis = 0): Tensor[] {
  const ax = normAxis(axis, x.rank, x.shape);
  if (sizes.reduce((a, b) => a + b, 0) !== x.shape[ax]) {
    throw new RangeError(
      `Split sizes [${sizes.join(", ")}] do not add up to axis ${ax} of shape ${fmtShape(x.shape)}`,
    );
  }
  let off = 0;
  return sizes.map((s) => {
    const b = new Array<number>(x.rank).fill(0);
    b[ax] = off;
    const sz = [...x.shape];
    sz[ax] = s;
    off += s;
    return slice(x, b, sz);
  });
}

/**
 * Rows `[start, end)` along axis 0 (the common batch slice).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { arange, sliceRows } from "../../mod.ts";
 * // rows 1 and 2 of [[0, 1], [2, 3], [4, 5]]
 * assert.deepEqual(await sliceRows(arange(6).reshape([3, 2]), 1, 3).array(), [[2, 3], [4, 5]]);
 * ```
 */
export function sliceRows(x: Tensor, start: number, end: number): Tensor {
  const b = new Array<number>(x.rank).fill(0);
  b[0] = start;
  const s = [...x.shape];
  s[0] = end - start;
  return slice(x, b, s);
}

/**
 * Flatten to 2-D [batch, rest] (or 1-D with `all`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { flatten2d, zeros } from "../../mod.ts";
 * assert.deepEqual([...flatten2d(zeros([2, 3, 4])).shape], [2, 12]);
 * ```
 */
export function flatten2d(x: Tensor): Tensor {
  return reshape(x, [x.shape[0] ?? 1, -1]);
}

/**
 * Select rows by integer indices (indexSelect along axis 0 by default).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { indexSelect, tensor } from "../../mod.ts";
 * const y = indexSelect(tensor([[1, 2], [3, 4]]), tensor([1, 1]));
 * assert.deepEqual(await y.array(), [[3, 4], [3, 4]]);
 * ```
 */
export function indexSelect(x: Tensor, indices: Tensor, axis = 0): Tensor {
  return gather(x, indices, axis);
}

/**
 * One-hot encode integer labels: [n] -> [n, numClasses].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { oneHot, tensor } from "../../mod.ts";
 * assert.deepEqual(await oneHot(tensor([1, 0]), 2).array(), [[0, 1], [1, 0]]);
 * ```
 */
export function oneHot(labels: Tensor, numClasses: number): Tensor {
  return tidy(() => {
    const be = labels.backend;
    const classes = Tensor._fromStorage(be.iota(numClasses, 0, 1), [1, numClasses], be);
    return binary("eq", reshape(labels, [labels.size, 1]), classes);
  });
}

/** Sum a tensor down to a shape (re-export for rules). */
export { sumTo as reduceTo };

/**
 * Mean squared error between two tensors of the same shape.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { mse, tensor } from "../../mod.ts";
 * assert.equal(await mse(tensor([1, 2]), tensor([1, 4])).item(), 2); // (0² + 2²)/2
 * ```
 */
export function mse(a: Tensor, b: Tensor): Tensor {
  return tidy(() => {
    return mean(unary("square", binary("sub", a, b)));
  });
}

/**
 * Global 2-norm of a list of tensors, √Σ‖x‖².
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { globalNorm, tensor } from "../../mod.ts";
 * assert.equal(await globalNorm([tensor([3]), tensor([4])]).item(), 5); // √(3² + 4²)
 * ```
 */
export function globalNorm(xs: readonly Tensor[]): Tensor {
  return tidy(() => {
    let acc: Tensor | null = null;
    for (const x of xs) {
      const s = reduce("sum", unary("square", x));
      acc = acc ? binary("add", acc, s) : s;
    }
    return acc ? unary("sqrt", acc) : full([], 0);
  });
}

/**
 * Place the values of `x` into `base` at row offset (functional, returns a new tensor).
 * Convenience built from slice/concat.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { pad, tensor } from "../../mod.ts";
 * assert.deepEqual([...await pad(tensor([1, 2]), [[1, 1]]).data()], [0, 1, 2, 0]);
 * assert.deepEqual(await pad(tensor([[1]]), [[0, 1], [1, 0]]).array(), [[0, 1], [0, 0]]);
 * ```
 */
export function pad(x: Tensor, widths: readonly (readonly [number, number])[]): Tensor {
  if (widths.length !== x.rank) {
    throw new RangeError(`pad() needs one [before, after] pair per axis of ${fmtShape(x.shape)}`);
  }
  const shape = x.shape.map((d, i) => d + widths[i]![0] + widths[i]![1]);
  return padSlice(x, shape, widths.map((w) => w[0]));
}

/** The broadcasting helper `broadcastTo` by its NumPy name. */
export { broadcastTo as expand };
