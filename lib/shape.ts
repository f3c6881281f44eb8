/**
 * @file Pure shape arithmetic: broadcasting, strides, axis normalisation. No GPU.
 * @module
 */
import { fmtShape, prod } from "./_util.ts";

/** A tensor shape: a list of non-negative integer extents. */
export type Shape = readonly number[];

/**
 * Row-major (C-order) strides of a shape.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { stridesOf } from "./shape.ts";
 * assert.deepEqual(stridesOf([2, 3, 4]), [12, 4, 1]);
 * ```
 */
export function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/**
 * NumPy broadcasting of two shapes; throws a `RangeError` naming both shapes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { broadcastShapes } from "./shape.ts";
 * assert.deepEqual(broadcastShapes([3, 1], [4]), [3, 4]);
 * assert.throws(() => broadcastShapes([3], [4]), RangeError);
 * ```
 */
export function broadcastShapes(a: Shape, b: Shape, what = "broadcast"): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new RangeError(
        `Cannot ${what} tensors: shapes ${fmtShape(a)} and ${fmtShape(b)} do not broadcast`,
      );
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/**
 * Strides for reading an input of shape `inShape` broadcast to `outShape` (0 on
 * broadcast axes), aligned to the output's rank.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { broadcastStrides } from "./shape.ts";
 * // [3, 1] seen as [1, 3, 1] inside [2, 3, 4]: only the middle axis moves through memory.
 * assert.deepEqual(broadcastStrides([3, 1], [2, 3, 4]), [0, 1, 0]);
 * ```
 */
export function broadcastStrides(inShape: Shape, outShape: Shape): number[] {
  const st = stridesOf(inShape);
  const n = outShape.length;
  const out = new Array<number>(n).fill(0);
  for (let i = 0; i < inShape.length; i++) {
    const j = n - inShape.length + i;
    out[j] = inShape[i] === 1 && outShape[j] !== 1 ? 0 : st[i]!;
  }
  return out;
}

/**
 * Normalise an axis (negative counts from the end); throws a `RangeError` naming the shape.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { normAxis } from "./shape.ts";
 * assert.equal(normAxis(-1, 3), 2);
 * assert.throws(() => normAxis(3, 3), RangeError);
 * ```
 */
export function normAxis(axis: number, rank: number, shape?: Shape): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) {
    const s = shape ? ` of shape ${fmtShape(shape)}` : "";
    throw new RangeError(`Axis ${axis} is out of range for a tensor of rank ${rank}${s}`);
  }
  return axis < 0 ? axis + rank : axis;
}

/**
 * Normalise, sort and de-duplicate a list of axes (undefined = all axes).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { normAxes } from "./shape.ts";
 * assert.deepEqual(normAxes([-1, 0], [2, 3, 4]), [0, 2]);
 * assert.deepEqual(normAxes(undefined, [2, 3]), [0, 1]);
 * ```
 */
export function normAxes(axes: number | readonly number[] | undefined, shape: Shape): number[] {
  const rank = shape.length;
  if (axes === undefined) return [...Array(rank).keys()];
  const list = typeof axes === "number" ? [axes] : axes;
  const set = new Set(list.map((a) => normAxis(a, rank, shape)));
  return [...set].sort((x, y) => x - y);
}

/**
 * Check that a shape is a list of non-negative integers; returns a copy.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkShape } from "./shape.ts";
 * assert.deepEqual(checkShape([2, 3]), [2, 3]);
 * assert.throws(() => checkShape([2, -1]), TypeError); // a negative dimension
 * ```
 */
export function checkShape(shape: Shape, name = "shape"): number[] {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new TypeError(
      `Expected ${name} to be a list of non-negative integers but found ${JSON.stringify(shape)}`,
    );
  }
  return [...shape];
}

/**
 * Number of elements of a shape.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sizeOf } from "./shape.ts";
 * assert.equal(sizeOf([2, 3]), 6);
 * assert.equal(sizeOf([]), 1);
 * ```
 */
export function sizeOf(shape: Shape): number {
  return prod(shape);
}

/**
 * Whether two shapes are equal.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { shapesEqual } from "./shape.ts";
 * assert.equal(shapesEqual([1, 2], [1, 2]), true);
 * assert.equal(shapesEqual([1, 2], [2, 1]), false);
 * ```
 */
export function shapesEqual(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
