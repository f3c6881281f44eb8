/**
 * @file Elementwise fusion: build an expression over several tensors and evaluate it in one
 * kernel (one dispatch on WebGPU instead of one per op). Per-dispatch overhead dominates
 * small models on Deno's WebGPU, so optimizer updates, sampler steps and EMA use this.
 * When any input is being differentiated (an active tape or jvp tangent), the same
 * expression runs op by op instead, so gradients stay exact.
 * @module
 */
import { _autodiffState, backendOf, Tensor } from "../tensor.ts";
import type { BinaryOp, FusedExpr, UnaryOp } from "../backend/backend.ts";
import { broadcastShapes, broadcastStrides } from "../shape.ts";
import { binary, unary, where } from "./prims.ts";
import { full } from "./ops.ts";

/**
 * A node of a fused expression (build with the methods, or with `fx`).
 * @example
 * ```ts
 * import { fused, tensor } from "../../mod.ts";
 * const [y] = fused([tensor([1, 2])], (x) => x.mul(2).add(1)); // x is an Fx
 * console.log(await y!.data()); // [3, 5]
 * ```
 */
export class Fx {
  /** @internal */
  constructor(readonly node: FusedExpr) {}
  /** this + o */
  add(o: Fx | number): Fx {
    return bin("add", this, o);
  }
  /** this − o */
  sub(o: Fx | number): Fx {
    return bin("sub", this, o);
  }
  /** this · o */
  mul(o: Fx | number): Fx {
    return bin("mul", this, o);
  }
  /** this / o */
  div(o: Fx | number): Fx {
    return bin("div", this, o);
  }
  /** max(this, o) */
  maximum(o: Fx | number): Fx {
    return bin("maximum", this, o);
  }
  /** min(this, o) */
  minimum(o: Fx | number): Fx {
    return bin("minimum", this, o);
  }
  /** A unary op of the table (with optional scalar parameters). */
  un(op: UnaryOp, p0 = 0, p1 = 0): Fx {
    return new Fx({ kind: "unary", op, x: this.node, p0, p1 });
  }
  /** x·a + b with scalars (one op). */
  affine(a: number, b: number): Fx {
    return this.un("affine", a, b);
  }
  /** √x */
  sqrt(): Fx {
    return this.un("sqrt");
  }
  /** x² */
  square(): Fx {
    return this.un("square");
  }
  /** Clamp into [lo, hi]. */
  clamp(lo: number, hi: number): Fx {
    return this.un("clamp", lo, hi);
  }
}

function lift(x: Fx | number): Fx {
  return typeof x === "number" ? new Fx({ kind: "const", value: x }) : x;
}
function bin(op: BinaryOp, a: Fx | number, b: Fx | number): Fx {
  return new Fx({ kind: "binary", op, a: lift(a).node, b: lift(b).node });
}

/**
 * Helpers for building fused expressions: constants and `where`.
 *
 * @example
 * ```ts
 * import { fx } from "../../mod.ts";
 * const two = fx.const(2);
 * ```
 */
export const fx = {
  /** A constant. */
  const: (v: number): Fx => new Fx({ kind: "const", value: v }),
  /** c ? a : b (c nonzero = true). */
  where: (c: Fx, a: Fx | number, b: Fx | number): Fx =>
    new Fx({ kind: "where", c: c.node, a: lift(a).node, b: lift(b).node }),
};

function evalEager(e: FusedExpr, xs: readonly Tensor[], memo: Map<FusedExpr, Tensor>): Tensor {
  const have = memo.get(e);
  if (have) return have;
  let r: Tensor;
  switch (e.kind) {
    case "input":
      r = xs[e.index]!;
      break;
    case "const":
      r = full([], e.value, xs[0]!.backend);
      break;
    case "unary":
      r = unary(e.op, evalEager(e.x, xs, memo), e.p0, e.p1);
      break;
    case "binary":
      r = binary(e.op, evalEager(e.a, xs, memo), evalEager(e.b, xs, memo));
      break;
    case "where":
      r = where(evalEager(e.c, xs, memo), evalEager(e.a, xs, memo), evalEager(e.b, xs, memo));
      break;
  }
  memo.set(e, r);
  return r;
}

function differentiating(xs: readonly Tensor[]): boolean {
  const { activeTapes, activeJvpLevels } = _autodiffState;
  return xs.some((x) =>
    (x._tapes && activeTapes.some((t) => x._tapes!.has(t.id))) ||
    (x._tangents && activeJvpLevels.some((l) => x._tangents!.has(l)))
  );
}

/**
 * Evaluate elementwise expressions of broadcast inputs in one fused kernel.
 * Returns one tensor per expression, all of the broadcast shape.
 *
 * @example
 * ```ts
 * import { fused, tensor } from "../../mod.ts";
 * const p = tensor([1, 2]), g = tensor([0.5, 0.5]);
 * // p − 0.1·g and g² in one kernel
 * const [p2, g2] = fused([p, g], (p, g) => [p.sub(g.mul(0.1)), g.square()]);
 * console.log(await p2.data(), await g2.data());
 * ```
 */
export function fused(
  inputs: readonly Tensor[],
  build: (...xs: Fx[]) => Fx | Fx[],
): Tensor[] {
  const vars = inputs.map((_, i) => new Fx({ kind: "input", index: i }));
  const res = build(...vars);
  const outs = (Array.isArray(res) ? res : [res]).map((f) => f.node);
  const be = backendOf(inputs);
  if (!be.fused || differentiating(inputs)) {
    const memo = new Map<FusedExpr, Tensor>();
    const shape = inputs.reduce<readonly number[]>((s, x) => broadcastShapes(s, x.shape), []);
    return outs.map((o) => {
      const t = evalEager(o, inputs, memo);
      // A bare input or a constant is not a fresh tensor of the broadcast shape: copy it.
      if (inputs.includes(t) || t.shape.length !== shape.length) {
        return binary("add", t, full(shape, 0, be));
      }
      return t;
    });
  }
  const shape = inputs.reduce<readonly number[]>((s, x) => broadcastShapes(s, x.shape), []);
  const strides = inputs.map((x) => broadcastStrides(x.shape, shape));
  const storages = be.fused(outs, inputs.map((x) => x.storage), strides, shape);
  return storages.map((s) => Tensor._fromStorage(s, shape, be));
}
