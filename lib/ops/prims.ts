/**
 * @file The primitive ops: each computes through the backend and attaches its vjp and jvp
 * rule. Every other op is composed from these, so it is differentiable in both modes.
 * @module
 */
import { applyPrim, attachRules, backendOf, Tensor, tidy } from "../tensor.ts";
import type { BinaryOp, ReduceOp, UnaryOp, View } from "../backend/backend.ts";
import {
  broadcastShapes,
  broadcastStrides,
  normAxes,
  normAxis,
  shapesEqual,
  sizeOf,
  stridesOf,
} from "../shape.ts";
import { fmtShape } from "../_util.ts";
// A cycle (fused.ts imports this file), safe because `fused` is only called at run time.
import { fused } from "./fused.ts";
import type { getBackend } from "../backend/select.ts";

function checkTensor(x: unknown, name: string): Tensor {
  if (!(x instanceof Tensor)) {
    throw new TypeError(`Expected ${name} to be a Tensor but found ${typeof x}`);
  }
  return x;
}

// ---------------------------------------------------------------- unary

const INV_SQRT_2PI = 0.3989422804014327;

/** d op(x) / dx as a tensor (null when the derivative is zero everywhere). */
function unaryDeriv(op: UnaryOp, x: Tensor, y: Tensor, p0: number, p1: number): Tensor | null {
  switch (op) {
    case "neg":
      return null; // handled specially
    case "exp":
      return y;
    case "log":
      return unary("reciprocal", x);
    case "sqrt":
      return unary("affine", unary("reciprocal", y), 0.5, 0);
    case "rsqrt":
      return unary("affine", unary("powScalar", y, 3), -0.5, 0);
    case "sin":
      return unary("cos", x);
    case "cos":
      return unary("neg", unary("sin", x));
    case "tanh":
      return unary("affine", unary("square", y), -1, 1);
    case "sigmoid":
      return binary("mul", y, unary("affine", y, -1, 1));
    case "silu": {
      const s = unary("sigmoid", x);
      // s + x·s·(1 − s)
      return binary("add", s, binary("mul", binary("mul", x, s), unary("affine", s, -1, 1)));
    }
    case "gelu": {
      const cdf = unary("affine", unary("erf", unary("affine", x, Math.SQRT1_2, 0)), 0.5, 0.5);
      const pdf = unary(
        "affine",
        unary("exp", unary("affine", unary("square", x), -0.5, 0)),
        INV_SQRT_2PI,
        0,
      );
      return binary("add", cdf, binary("mul", x, pdf));
    }
    case "relu":
      return unary("gtScalar", x, 0);
    case "abs":
      return unary("sign", x);
    case "square":
      return unary("affine", x, 2, 0);
    case "reciprocal":
      return unary("neg", unary("square", y));
    case "erf":
      return unary(
        "affine",
        unary("exp", unary("affine", unary("square", x), -1, 0)),
        2 / Math.sqrt(Math.PI),
        0,
      );
    case "affine":
      return null; // handled specially
    case "powScalar":
      return p0 === 0 ? null : unary("affine", unary("powScalar", x, p0 - 1), p0, 0);
    case "clamp":
      return binary("mul", unary("geScalar", x, p0), unary("leScalar", x, p1));
    case "copy":
      return null;
    default:
      // sign, floor, comparisons, isNan: piecewise constant.
      return null;
  }
}

// g · f'(x) for activations whose derivative is a chain of several elementwise ops, as one
// `fused` kernel (one dispatch instead of 4–7: the silu backward of a [B, 256] layer was 6).
// The expressions repeat unaryDeriv's formulas op for op, and `fused` itself runs them op by op
// whenever an input is being differentiated, so higher-order derivatives stay exact.
function fusedUnaryGrad(op: UnaryOp, g: Tensor, x: Tensor, y: Tensor): Tensor | null {
  if (!x.backend.fused || g.backend !== x.backend || !shapesEqual(g.shape, x.shape)) return null;
  switch (op) {
    case "silu":
      return fused([g, x], (g, x) => {
        const s = x.un("sigmoid");
        return g.mul(s.add(x.mul(s).mul(s.affine(-1, 1))));
      })[0]!;
    case "sigmoid":
      return fused([g, y], (g, y) => g.mul(y.mul(y.affine(-1, 1))))[0]!;
    case "tanh":
      return fused([g, y], (g, y) => g.mul(y.square().affine(-1, 1)))[0]!;
    case "gelu":
      return fused([g, x], (g, x) => {
        const cdf = x.affine(Math.SQRT1_2, 0).un("erf").affine(0.5, 0.5);
        const pdf = x.square().affine(-0.5, 0).un("exp").affine(INV_SQRT_2PI, 0);
        return g.mul(cdf.add(x.mul(pdf)));
      })[0]!;
    default:
      return null;
  }
}

const ZERO_GRAD_UNARY = new Set<UnaryOp>([
  "sign",
  "floor",
  "gtScalar",
  "geScalar",
  "ltScalar",
  "leScalar",
  "eqScalar",
  "isNan",
]);

/**
 * Apply an elementwise unary op (see `UNARY` in lib/backend/backend.ts).
 *
 * @example
 * ```ts
 * import { tensor, unary } from "../../mod.ts";
 * const y = unary("affine", tensor([1, 2]), 3, 1); // 3x + 1
 * console.log(await y.data()); // [4, 7]
 * ```
 */
export function unary(op: UnaryOp, x: Tensor, p0 = 0, p1 = 0): Tensor {
  checkTensor(x, "x");
  const be = x.backend;
  const s = be.unary(op, x.storage, p0, p1);
  const linear = (g: Tensor): Tensor | null => {
    if (op === "neg") return unary("neg", g);
    if (op === "affine") return unary("affine", g, p0, 0);
    if (op === "copy") return g;
    if (ZERO_GRAD_UNARY.has(op)) return null;
    const f = fusedUnaryGrad(op, g, x, out);
    if (f) return f;
    const dfx = unaryDeriv(op, x, out, p0, p1);
    return dfx ? binary("mul", g, dfx) : null;
  };
  // Create the output before attaching rules: forward mode runs the jvp rule inside
  // attachRules, and rules that use the output (exp, tanh, …) must see it initialised.
  const out = Tensor._fromStorage(s, x.shape, be);
  attachRules(out, [x], {
    vjp: (g) => [linear(g)],
    jvp: ([t]) => linear(t!),
  });
  return out;
}

// ---------------------------------------------------------------- broadcasting helpers

/**
 * Sum a broadcast gradient back down to `shape`.
 *
 * @example
 * ```ts
 * import { ones, sumTo } from "../../mod.ts";
 * const g = sumTo(ones([3, 4]), [1, 4]);
 * console.log(await g.data()); // [3, 3, 3, 3]
 * ```
 */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (shapesEqual(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  // tidy: the reduced tensor is an intermediate that the reshaped view would otherwise pin.
  return tidy(() => reshape(axes.length ? reduce("sum", g, axes) : g, shape));
}

// ---------------------------------------------------------------- binary

/**
 * Apply an elementwise binary op with NumPy broadcasting.
 *
 * @example
 * ```ts
 * import { binary, tensor } from "../../mod.ts";
 * const y = binary("mul", tensor([1, 2, 3], [3, 1]), tensor([10, 20], [2]));
 * console.log(y.shape); // [3, 2]
 * ```
 */
export function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  checkTensor(a, "a");
  checkTensor(b, "b");
  const be = backendOf([a, b]);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const s = be.binary(
    op,
    a.storage,
    broadcastStrides(a.shape, shape),
    b.storage,
    broadcastStrides(b.shape, shape),
    shape,
  );
  const cmp = op === "eq" || op === "ne" || op === "lt" || op === "le" || op === "gt" ||
    op === "ge";
  if (cmp) return applyPrim([a, b], s, shape, be, { vjp: () => [null, null], jvp: () => null });
  // Partial derivatives as functions of the incoming (co)tangent, before un-broadcasting.
  const da = (g: Tensor): Tensor => {
    switch (op) {
      case "add":
      case "sub":
        return g;
      case "mul":
        return binary("mul", g, b);
      case "div":
        return binary("div", g, b);
      case "pow":
        return binary("mul", g, binary("mul", b, binary("pow", a, unary("affine", b, 1, -1))));
      case "maximum":
        return binary("mul", g, binary("ge", a, b));
      case "minimum":
        return binary("mul", g, binary("le", a, b));
    }
    throw new Error("unreachable");
  };
  const db = (g: Tensor): Tensor => {
    switch (op) {
      case "add":
        return g;
      case "sub":
        return unary("neg", g);
      case "mul":
        return binary("mul", g, a);
      case "div":
        return unary("neg", binary("div", binary("mul", g, out), b));
      case "pow":
        return binary("mul", g, binary("mul", out, unary("log", a)));
      case "maximum":
        return binary("mul", g, binary("lt", a, b));
      case "minimum":
        return binary("mul", g, binary("gt", a, b));
    }
    throw new Error("unreachable");
  };
  // Output first, then rules (the div/pow rules read `out`; see `unary`).
  const out = Tensor._fromStorage(s, shape, be);
  attachRules(out, [a, b], {
    vjp: (g, need) => [
      need[0] === false ? null : sumTo(da(g), a.shape),
      need[1] === false ? null : sumTo(db(g), b.shape),
    ],
    jvp: ([ta, tb]) => {
      const pa = ta ? da(ta) : null;
      const pb = tb ? db(tb) : null;
      if (pa && pb) return binary("add", pa, pb);
      return pa ?? pb;
    },
  });
  return out;
}

/**
 * `cond ? a : b` elementwise with broadcasting (cond is nonzero = true).
 *
 * @example
 * ```ts
 * import { tensor, where } from "../../mod.ts";
 * const y = where(tensor([1, 0]), tensor([5, 5]), tensor([7, 7]));
 * console.log(await y.data()); // [5, 7]
 * ```
 */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  const be = backendOf([cond, a, b]);
  const shape = broadcastShapes(broadcastShapes(cond.shape, a.shape, "where"), b.shape, "where");
  const s = be.where(
    cond.storage,
    broadcastStrides(cond.shape, shape),
    a.storage,
    broadcastStrides(a.shape, shape),
    b.storage,
    broadcastStrides(b.shape, shape),
    shape,
  );
  const zero = () => zerosOn(be, [1]);
  return applyPrim([cond, a, b], s, shape, be, {
    vjp: (g, need) => [
      null,
      need[1] === false ? null : sumTo(where(cond, g, zero()), a.shape),
      need[2] === false ? null : sumTo(where(cond, zero(), g), b.shape),
    ],
    // A missing tangent is zeros of its primal's shape, so the tangent broadcasts to the
    // output's shape; cond is piecewise constant (its tangent alone gives zero).
    jvp: ([, ta, tb]) =>
      ta || tb ? where(cond, ta ?? zerosOn(be, a.shape), tb ?? zerosOn(be, b.shape)) : null,
  });
}

// ---------------------------------------------------------------- creation helpers

/** @internal zeros on a given backend. */
export function zerosOn(be: ReturnType<typeof getBackend>, shape: readonly number[]): Tensor {
  return Tensor._fromStorage(be.fill(sizeOf(shape), 0), shape, be);
}

// ---------------------------------------------------------------- reshape, permute, expand

/**
 * Same elements, new shape; one axis may be −1. Shares storage (no copy).
 *
 * @example
 * ```ts
 * import { arange, reshape } from "../../mod.ts";
 * console.log(reshape(arange(6), [2, -1]).shape); // [2, 3]
 * ```
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor(x, "x");
  const s = [...shape];
  const neg = s.indexOf(-1);
  if (neg >= 0) {
    const rest = s.reduce((a, d, i) => (i === neg ? a : a * d), 1);
    s[neg] = rest === 0 ? 0 : x.size / rest;
  }
  if (s.some((d) => !Number.isInteger(d) || d < 0) || sizeOf(s) !== x.size) {
    throw new RangeError(
      `Cannot reshape a tensor of shape ${fmtShape(x.shape)} to ${fmtShape(shape)}`,
    );
  }
  if (shapesEqual(s, x.shape)) return x;
  const out = x._share(s);
  const from = x.shape;
  attachRules(out, [x], {
    vjp: (g) => [reshape(g, from)],
    jvp: ([t]) => reshape(t!, s),
  });
  return out;
}

function stridedCopy(x: Tensor, view: View): Tensor {
  const be = x.backend;
  const size = sizeOf(view.shape);
  const dst = be.alloc(size);
  be.copyInto(
    dst,
    { shape: view.shape, strides: stridesOf(view.shape), offset: 0 },
    x.storage,
    view,
  );
  return Tensor._fromStorage(dst, view.shape, be);
}

/**
 * Permute axes (reverse them when `perm` is omitted). Materialises a contiguous copy.
 *
 * @example
 * ```ts
 * import { arange, transpose } from "../../mod.ts";
 * console.log(transpose(arange(6).reshape([2, 3])).shape); // [3, 2]
 * ```
 */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  checkTensor(x, "x");
  const p = perm ?? [...Array(x.rank).keys()].reverse();
  const sorted = [...p].map((a) => normAxis(a, x.rank, x.shape)).sort((a, b) => a - b);
  if (p.length !== x.rank || sorted.some((a, i) => a !== i)) {
    throw new RangeError(
      `Expected perm to be a permutation of the ${x.rank} axes of shape ${
        fmtShape(x.shape)
      } but found [${p.join(", ")}]`,
    );
  }
  const pp = p.map((a) => normAxis(a, x.rank));
  if (pp.every((a, i) => a === i)) return x;
  const st = stridesOf(x.shape);
  const shape = pp.map((a) => x.shape[a]!);
  const out = stridedCopy(x, { shape, strides: pp.map((a) => st[a]!), offset: 0 });
  const inv = new Array<number>(pp.length);
  pp.forEach((a, i) => (inv[a] = i));
  attachRules(out, [x], {
    vjp: (g) => [transpose(g, inv)],
    jvp: ([t]) => transpose(t!, pp),
  });
  return out;
}

/**
 * Broadcast to a larger shape (materialised).
 *
 * @example
 * ```ts
 * import { broadcastTo, tensor } from "../../mod.ts";
 * console.log(broadcastTo(tensor([1, 2]), [3, 2]).shape); // [3, 2]
 * ```
 */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor(x, "x");
  const target = broadcastShapes(x.shape, shape, "broadcast");
  if (!shapesEqual(target, shape)) {
    throw new RangeError(
      `Cannot broadcast a tensor of shape ${fmtShape(x.shape)} to ${fmtShape(shape)}`,
    );
  }
  if (shapesEqual(x.shape, shape)) return x;
  const out = stridedCopy(x, { shape, strides: broadcastStrides(x.shape, shape), offset: 0 });
  const from = x.shape;
  attachRules(out, [x], {
    vjp: (g) => [sumTo(g, from)],
    jvp: ([t]) => broadcastTo(t!, shape),
  });
  return out;
}

// ---------------------------------------------------------------- slicing, concat

/**
 * Take `x[begin[i] : begin[i] + size[i]]` on every axis (size −1 = to the end).
 *
 * @example
 * ```ts
 * import { arange, slice } from "../../mod.ts";
 * const y = slice(arange(10).reshape([2, 5]), [0, 1], [2, 3]);
 * console.log(await y.data()); // [1, 2, 3, 6, 7, 8]
 * ```
 */
export function slice(x: Tensor, begin: readonly number[], size: readonly number[]): Tensor {
  checkTensor(x, "x");
  if (begin.length !== x.rank || size.length !== x.rank) {
    throw new RangeError(
      `slice() needs begin and size with one entry per axis of shape ${fmtShape(x.shape)}`,
    );
  }
  const sz = size.map((s, i) => (s === -1 ? x.shape[i]! - begin[i]! : s));
  for (let i = 0; i < x.rank; i++) {
    if (
      !Number.isInteger(begin[i]) || !Number.isInteger(sz[i]) || begin[i]! < 0 || sz[i]! < 0 ||
      begin[i]! + sz[i]! > x.shape[i]!
    ) {
      throw new RangeError(
        `Slice [${begin.join(", ")}] + [${sz.join(", ")}] is out of range for shape ${
          fmtShape(x.shape)
        }`,
      );
    }
  }
  if (shapesEqual(sz, x.shape)) return x;
  const st = stridesOf(x.shape);
  const offset = begin.reduce((a, b, i) => a + b * st[i]!, 0);
  const out = stridedCopy(x, { shape: sz, strides: st, offset });
  const from = x.shape;
  attachRules(out, [x], {
    vjp: (g) => [padSlice(g, from, begin)],
    jvp: ([t]) => slice(t!, begin, sz),
  });
  return out;
}

/**
 * Zeros of `shape` with `x` written at offset `begin` (the adjoint of `slice`).
 *
 * @example
 * ```ts
 * import { padSlice, tensor } from "../../mod.ts";
 * console.log(await padSlice(tensor([1, 2]), [4], [1]).data()); // [0, 1, 2, 0]
 * ```
 */
export function padSlice(x: Tensor, shape: readonly number[], begin: readonly number[]): Tensor {
  checkTensor(x, "x");
  // Without this check the strided copy silently drops (or misplaces) out-of-range elements.
  if (
    shape.length !== x.rank || begin.length !== x.rank ||
    x.shape.some((d, i) =>
      !Number.isInteger(begin[i]) || !Number.isInteger(shape[i]) || begin[i]! < 0 ||
      begin[i]! + d > shape[i]!
    )
  ) {
    throw new RangeError(
      `Cannot place a tensor of shape ${fmtShape(x.shape)} at offset [${begin.join(", ")}] ` +
        `in a tensor of shape ${fmtShape(shape)}`,
    );
  }
  const be = x.backend;
  const dst = be.fill(sizeOf(shape), 0);
  const st = stridesOf(shape);
  be.copyInto(
    dst,
    { shape: x.shape, strides: st, offset: begin.reduce((a, b, i) => a + b * st[i]!, 0) },
    x.storage,
    { shape: x.shape, strides: stridesOf(x.shape), offset: 0 },
  );
  const out = Tensor._fromStorage(dst, shape, be);
  const sz = x.shape;
  attachRules(out, [x], {
    vjp: (g) => [slice(g, begin, sz)],
    jvp: ([t]) => padSlice(t!, shape, begin),
  });
  return out;
}

/**
 * Join tensors along an existing axis.
 *
 * @example
 * ```ts
 * import { concat, tensor } from "../../mod.ts";
 * console.log(concat([tensor([1]), tensor([2, 3])], 0).shape); // [3]
 * ```
 */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new RangeError("concat() needs at least one tensor");
  xs.forEach((x, i) => checkTensor(x, `tensors[${i}]`));
  const be = backendOf(xs);
  const ax = normAxis(axis, xs[0]!.rank, xs[0]!.shape);
  const base = xs[0]!.shape;
  for (const x of xs) {
    if (x.rank !== base.length || x.shape.some((d, i) => i !== ax && d !== base[i])) {
      throw new RangeError(
        `Cannot concat tensors of shapes ${xs.map((t) => fmtShape(t.shape)).join(", ")} ` +
          `along axis ${axis}`,
      );
    }
  }
  if (xs.length === 1) return xs[0]!;
  const shape = [...base];
  shape[ax] = xs.reduce((a, x) => a + x.shape[ax]!, 0);
  const dst = be.alloc(sizeOf(shape));
  const st = stridesOf(shape);
  let off = 0;
  const offsets: number[] = [];
  for (const x of xs) {
    offsets.push(off);
    if (x.size > 0) {
      be.copyInto(dst, { shape: x.shape, strides: st, offset: off * st[ax]! }, x.storage, {
        shape: x.shape,
        strides: stridesOf(x.shape),
        offset: 0,
      });
    }
    off += x.shape[ax]!;
  }
  const out = Tensor._fromStorage(dst, shape, be);
  attachRules(out, xs, {
    vjp: (g, need) =>
      xs.map((x, i) => {
        if (need[i] === false) return null;
        const b = new Array<number>(shape.length).fill(0);
        b[ax] = offsets[i]!;
        return slice(g, b, x.shape);
      }),
    jvp: (ts) => concat(ts.map((t, i) => t ?? zerosOn(be, xs[i]!.shape)), ax),
  });
  return out;
}

// ---------------------------------------------------------------- gather / scatter

/**
 * Select entries along `axis` by integer indices (a 1-D tensor of f32 integers).
 *
 * @example
 * ```ts
 * import { gather, tensor } from "../../mod.ts";
 * const y = gather(tensor([10, 20, 30]), tensor([2, 0]), 0);
 * console.log(await y.data()); // [30, 10]
 * ```
 */
export function gather(x: Tensor, indices: Tensor, axis = 0): Tensor {
  checkTensor(x, "x");
  checkTensor(indices, "indices");
  const be = backendOf([x, indices]);
  const ax = normAxis(axis, x.rank, x.shape);
  if (indices.rank !== 1) {
    throw new RangeError(`Expected indices to be 1-D but found shape ${fmtShape(indices.shape)}`);
  }
  const shape = [...x.shape];
  shape[ax] = indices.size;
  const s = be.gather(x.storage, x.shape, ax, indices.storage);
  const dim = x.shape[ax]!;
  return applyPrim([x, indices], s, shape, be, {
    vjp: (g) => [scatterAdd(g, indices, ax, dim), null],
    jvp: ([t]) => (t ? gather(t, indices, ax) : null),
  });
}

/**
 * Sum slices of `src` into a zero tensor whose `axis` has `dimSize` entries, at `indices`.
 *
 * @example
 * ```ts
 * import { scatterAdd, tensor } from "../../mod.ts";
 * const y = scatterAdd(tensor([1, 2, 3]), tensor([0, 0, 2]), 0, 3);
 * console.log(await y.data()); // [3, 0, 3]
 * ```
 */
export function scatterAdd(src: Tensor, indices: Tensor, axis: number, dimSize: number): Tensor {
  checkTensor(src, "src");
  const be = backendOf([src, indices]);
  const ax = normAxis(axis, src.rank, src.shape);
  if (indices.rank !== 1 || indices.size !== src.shape[ax]) {
    throw new RangeError(
      `Expected indices of shape [${src.shape[ax]}] for src of shape ${
        fmtShape(src.shape)
      } along axis ${ax} but found ${fmtShape(indices.shape)}`,
    );
  }
  const shape = [...src.shape];
  shape[ax] = dimSize;
  const s = be.scatterAdd(src.storage, src.shape, ax, indices.storage, dimSize);
  return applyPrim([src, indices], s, shape, be, {
    vjp: (g) => [gather(g, indices, ax), null],
    jvp: ([t]) => (t ? scatterAdd(t, indices, ax, dimSize) : null),
  });
}

// ---------------------------------------------------------------- reductions

/**
 * Reduce over axes (all by default), keeping them as size-1 axes when `keepdims`.
 * `argmax`/`argmin` need exactly one axis (or a 1-D input) and are not differentiable.
 *
 * @example
 * ```ts
 * import { reduce, tensor } from "../../mod.ts";
 * const y = reduce("max", tensor([1, 5, 2, 4], [2, 2]), [1]);
 * console.log(await y.data()); // [5, 4]
 * ```
 */
export function reduce(
  op: ReduceOp,
  x: Tensor,
  axes?: number | readonly number[],
  keepdims = false,
): Tensor {
  checkTensor(x, "x");
  const ax = normAxes(axes, x.shape);
  const be = x.backend;
  const keptShape = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const outShape = keepdims ? keptShape : x.shape.filter((_, i) => !ax.includes(i));
  if ((op === "max" || op === "min") && ax.some((a) => x.shape[a] === 0)) {
    throw new RangeError(`Cannot take the ${op} over an empty axis of shape ${fmtShape(x.shape)}`);
  }
  const s = be.reduce(op, x.storage, x.shape, ax);
  if (op === "argmax" || op === "argmin") {
    return applyPrim([x], s, outShape, be, { vjp: () => [null], jvp: () => null });
  }
  if (op === "sum") {
    return applyPrim([x], s, outShape, be, {
      vjp: (g) => [broadcastTo(reshape(g, keptShape), x.shape)],
      jvp: ([t]) => reduce("sum", t!, ax, keepdims),
    });
  }
  // max/min: the gradient is shared evenly among ties (like torch.amax).
  // Output and tieWeights exist before attachRules, which runs the jvp rule right away.
  const out = Tensor._fromStorage(s, outShape, be);
  const tieWeights = () => {
    const mask = binary("eq", x, reshape(out, keptShape));
    return binary("div", mask, reduce("sum", mask, ax, true));
  };
  attachRules(out, [x], {
    vjp: (g) => {
      const w = tieWeights();
      return [binary("mul", w, reshape(g, keptShape))];
    },
    jvp: ([t]) => reduce("sum", binary("mul", t!, tieWeights()), ax, keepdims),
  });
  return out;
}

// ---------------------------------------------------------------- matmul

/**
 * Matrix product with NumPy semantics: 1-D operands are promoted, batch axes broadcast.
 * `transA`/`transB` multiply by the transpose of the last two axes without a copy.
 *
 * @example
 * ```ts
 * import { matmul, tensor } from "../../mod.ts";
 * const c = matmul(tensor([1, 2, 3, 4], [2, 2]), tensor([1, 0, 0, 1], [2, 2]));
 * console.log(await c.data()); // [1, 2, 3, 4]
 * ```
 */
export function matmul(
  a: Tensor,
  b: Tensor,
  opts: { transA?: boolean; transB?: boolean } = {},
): Tensor {
  checkTensor(a, "a");
  checkTensor(b, "b");
  const transA = opts.transA ?? false, transB = opts.transB ?? false;
  if (a.rank === 0 || b.rank === 0) {
    throw new RangeError(
      `Cannot matmul tensors: shapes ${fmtShape(a.shape)} and ${fmtShape(b.shape)} need rank >= 1`,
    );
  }
  // Check alignment on the caller's shapes, before 1-D operands are promoted to matrices.
  const kA = a.rank === 1 ? a.shape[0]! : a.shape[a.rank - (transA ? 2 : 1)]!;
  const kB = b.rank === 1 ? b.shape[0]! : b.shape[b.rank - (transB ? 1 : 2)]!;
  if (kA !== kB) {
    throw new RangeError(
      `Cannot matmul tensors: shapes ${fmtShape(a.shape)} and ${fmtShape(b.shape)} do not align` +
        (transA || transB ? ` (transA=${transA}, transB=${transB})` : ""),
    );
  }
  // tidy: the promoted views would otherwise pin the operands' storage after they are freed.
  if (a.rank === 1) {
    return tidy(() => {
      const r = matmul(reshape(a, [1, a.size]), b, { transB });
      // The promoted row axis is second to last, or last when b is 1-D too (a dot product).
      const row = b.rank === 1 ? r.rank - 1 : r.rank - 2;
      return reshape(r, r.shape.filter((_, i) => i !== row));
    });
  }
  if (b.rank === 1) {
    return tidy(() => {
      const r = matmul(a, reshape(b, [b.size, 1]), { transA });
      return reshape(r, r.shape.slice(0, -1));
    });
  }
  const be = backendOf([a, b]);
  const m = transA ? a.shape[a.rank - 1]! : a.shape[a.rank - 2]!;
  const ka = transA ? a.shape[a.rank - 2]! : a.shape[a.rank - 1]!;
  const kb = transB ? b.shape[b.rank - 1]! : b.shape[b.rank - 2]!;
  const n = transB ? b.shape[b.rank - 2]! : b.shape[b.rank - 1]!;
  if (ka !== kb) {
    throw new RangeError(
      `Cannot matmul tensors: shapes ${fmtShape(a.shape)} and ${fmtShape(b.shape)} do not align` +
        (transA || transB ? ` (transA=${transA}, transB=${transB})` : ""),
    );
  }
  const aBatch = a.shape.slice(0, -2), bBatch = b.shape.slice(0, -2);
  const batchShape = broadcastShapes(aBatch, bBatch, "matmul");
  const batch = sizeOf(batchShape);
  // Operands whose batch axes are not the full broadcast shape nor all ones are expanded.
  const prep = (x: Tensor, xb: readonly number[]): [Tensor, number] => {
    const inner = x.shape.slice(-2);
    if (sizeOf(xb) === 1) return [x, 0];
    if (shapesEqual(broadcastShapes(xb, [], ""), batchShape) || sizeOf(xb) === batch) {
      return [x, inner[0]! * inner[1]!];
    }
    return [broadcastTo(x, [...batchShape, ...inner]), inner[0]! * inner[1]!];
  };
  const [a2, aStride] = prep(a, aBatch);
  const [b2, bStride] = prep(b, bBatch);
  const s = be.matmul(a2.storage, b2.storage, {
    batch,
    m,
    n,
    k: ka,
    transA,
    transB,
    aBatchStride: aStride,
    bBatchStride: bStride,
  });
  const shape = [...batchShape, m, n];
  return applyPrim([a, b], s, shape, be, {
    vjp: (g, need) => {
      // C = op(A) op(B): dA = g op(B)^T (transposed back if transA), dB likewise.
      const ga = need[0] === false
        ? null
        : transA
        ? matmul(b, g, { transA: transB, transB: true })
        : matmul(g, b, { transB: !transB });
      const gb = need[1] === false
        ? null
        : transB
        ? matmul(g, a, { transA: true, transB: transA })
        : matmul(a, g, { transA: !transA });
      return [ga && sumTo(ga, a.shape), gb && sumTo(gb, b.shape)];
    },
    jvp: ([ta, tb]) => {
      const p = ta ? matmul(ta, b, { transA, transB }) : null;
      const q = tb ? matmul(a, tb, { transA, transB }) : null;
      return p && q ? binary("add", p, q) : (p ?? q);
    },
  });
}

// ---------------------------------------------------------------- gradient plumbing

/**
 * A copy of `x` that gradients do not flow through (shares storage).
 *
 * @example
 * ```ts
 * import { stopGradient, tensor } from "../../mod.ts";
 * const y = stopGradient(tensor([1, 2]));
 * ```
 */
export function stopGradient(x: Tensor): Tensor {
  checkTensor(x, "x");
  return x._share(x.shape);
}

/** @internal Identity with rules (used to attach jvp tangents to primals). */
export function identity(x: Tensor): Tensor {
  const out = x._share(x.shape);
  attachRules(out, [x], { vjp: (g) => [g], jvp: ([t]) => t });
  return out;
}
