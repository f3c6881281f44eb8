/**
 * @file Elementwise fusion: build an expression over several tensors and evaluate it in one
 * kernel (one dispatch on WebGPU instead of one per op). Per-dispatch overhead dominates
 * small models on Deno's WebGPU, so optimizer updates, sampler steps and EMA use this.
 * When any input is being differentiated (an active tape or jvp tangent), the same
 * expression runs op by op instead, so gradients stay exact.
 * @module
 */
import { _autodiffState, backendOf, Tensor } from "../tensor.ts";
import type { BinaryOp, FusedExpr, Storage, UnaryOp } from "../backend/backend.ts";
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

/**
 * Apply one elementwise expression to several groups of same-shaped tensors (per parameter:
 * p, g, m, v) plus shared scalar tensors (0-d or one element) in one kernel on WebGPU (a
 * few when the groups need more storage buffers than a shader may bind). `build` receives
 * the group's inputs, then the scalars. Returns, per group, one tensor per expression of
 * the group's shape. With `into`, output t (where `into[t] ≥ 0`) updates the group's input
 * `into[t]` instead, and that input tensor itself is returned: the kernel writes its buffer in
 * place when no other tensor shares it (else a new buffer is assigned to it, like
 * `_assign`), which saves an output binding per group, so more groups fit one dispatch.
 * Falls back to `fused` per group when the backend lacks the grouped kernel or any input is
 * being differentiated.
 *
 * @example
 * ```ts
 * import { fusedGroups, tensor } from "../../mod.ts";
 * const lr = tensor(0.1);
 * const [[a], [b]] = fusedGroups(
 *   [[tensor([1, 2]), tensor([1, 1])], [tensor([3]), tensor([2])]],
 *   [lr],
 *   (p, g, lr) => p.sub(g.mul(lr)),
 * );
 * console.log(await a!.data(), await b!.data()); // ≈ [0.9, 1.9], [2.8]
 * ```
 */
export function fusedGroups(
  groups: readonly (readonly Tensor[])[],
  scalars: readonly Tensor[],
  build: (...xs: Fx[]) => Fx | Fx[],
  opts: { into?: readonly number[] } = {},
): Tensor[][] {
  if (groups.length === 0) return [];
  const k = groups[0]!.length;
  groups.forEach((g, i) => {
    if (g.length !== k) {
      throw new RangeError(`Expected group ${i} to have ${k} tensors but found ${g.length}`);
    }
    g.forEach((x, t) => {
      if (x.shape.length !== g[0]!.shape.length || x.shape.some((d, a) => d !== g[0]!.shape[a])) {
        throw new RangeError(
          `Expected tensor ${t} of group ${i} to have shape [${
            g[0]!.shape
          }] but found [${x.shape}]`,
        );
      }
    });
  });
  scalars.forEach((s, t) => {
    if (s.size !== 1) {
      throw new RangeError(`Expected scalar ${t} to have one element but found ${s.size}`);
    }
  });
  const into = opts.into ?? [];
  into.forEach((u, t) => {
    if (!Number.isInteger(u) || u >= k || u < -1) {
      throw new RangeError(
        `Expected into[${t}] to be an input index in [-1, ${k - 1}] but found ${u}`,
      );
    }
  });
  const all = [...groups.flat(), ...scalars];
  const be = backendOf(all);
  // Results as fresh tensors, then each `into` output assigned to its input tensor.
  const assignInto = (res: Tensor[][]) =>
    res.map((outs, i) =>
      outs.map((o, t) => {
        const u = into[t] ?? -1;
        if (u < 0) return o;
        groups[i]![u]!._assign(o);
        return groups[i]![u]!;
      })
    );
  if (!be.fusedGroups || k === 0 || differentiating(all)) {
    return assignInto(groups.map((g) => fused([...g, ...scalars], build)));
  }
  const vars = Array.from(
    { length: k + scalars.length },
    (_, i) => new Fx({ kind: "input", index: i }),
  );
  const res = build(...vars);
  const outs = (Array.isArray(res) ? res : [res]).map((f) => f.node);
  const spec = groups.map((g) => ({ inputs: g.map((x) => x.storage), size: g[0]!.size }));
  // Writing in place is safe only when the written buffer is this tensor's alone (no
  // reshape view shares it) and is bound nowhere else in the call (WebGPU rejects a
  // writable buffer bound twice; a second reader would see a half-updated buffer).
  const counts = new Map<Storage, number>();
  for (const x of all) counts.set(x.storage, (counts.get(x.storage) ?? 0) + 1);
  const targets = groups.flatMap((g) => into.filter((u) => u >= 0).map((u) => g[u]!));
  const inPlace = into.length > 0 &&
    targets.every((x) => x._buf().refs === 1 && counts.get(x.storage) === 1);
  if (!inPlace) {
    const ss = be.fusedGroups(outs, spec, scalars.map((s) => s.storage));
    return assignInto(
      ss.map((row, i) => row.map((s) => Tensor._fromStorage(s, groups[i]![0]!.shape, be))),
    );
  }
  const ss = be.fusedGroups(
    outs,
    spec,
    scalars.map((s) => s.storage),
    outs.map((_, t) => into[t] ?? -1),
  );
  return ss.map((row, i) =>
    row.map((s, t) =>
      (into[t] ?? -1) >= 0
        ? groups[i]![into[t]!]!
        : Tensor._fromStorage(s, groups[i]![0]!.shape, be)
    )
  );
}
