/**
 * @file Reverse mode (`grad`, `valueAndGrad`, `vjp`) over tapes, and forward mode (`jvp`)
 * over tangents. Both are driven by the per-primitive rules lib/tensor.ts attaches, and
 * the rules are made of differentiable ops, so a jvp inside a loss can be differentiated.
 * @module
 */
import {
  _autodiffState,
  _popScope,
  _pushScope,
  binary,
  identity,
  padSlice,
  Tape,
  Tensor,
  type TensorTree,
  treeLeaves,
  treeMap,
  zerosOn,
} from "../tensor.ts";
import { fmtShape } from "../_util.ts";
import { stridesOf } from "../shape.ts";

const { activeTapes, activeJvpLevels } = _autodiffState;

/** Once a tape stops recording, the tensors its nodes read may be disposed again. */
function releaseHeld(tape: Tape): void {
  for (const n of tape.nodes) for (const x of n.inputs) x._held?.delete(tape.id);
}

/** A slice's cotangent waiting to be written into its input's cotangent at `begin`. */
interface Piece {
  g: Tensor;
  begin: readonly number[];
}

// Whether two boxes (offset, extent per axis) share an element.
function overlap(a: Piece, b: Piece): boolean {
  return a.begin.every((o, i) =>
    o < b.begin[i]! + b.g.shape[i]! && b.begin[i]! < o + a.g.shape[i]!
  );
}

/**
 * The cotangent of `x` from the cotangents of slices of it (and `dense`, the sum of its other
 * cotangents, if any): one array with each piece copied into its box, where slice's vjp made a
 * zero-padded array per piece and the tape added them (a DiT block's 6-way split of its AdaLN
 * output: 6 fills, 6 copies and 5 adds of the whole [B, 6·D] became one copy per piece).
 * Pieces that overlap take the vjp's way. The result is a fresh array with no autodiff rules:
 * only for a reverse pass that is not itself differentiated.
 */
function assemble(x: Tensor, dense: Tensor | undefined, pieces: Piece[]): Tensor {
  const be = x.backend, st = stridesOf(x.shape);
  const disjoint = pieces.every((p, i) => pieces.slice(0, i).every((q) => !overlap(p, q)));
  let out: Tensor;
  if (!disjoint) {
    out = pieces.map((p) => padSlice(p.g, x.shape, p.begin)).reduce((a, b) => binary("add", a, b));
  } else {
    const dst = be.fill(x.size, 0);
    for (const p of pieces) {
      be.copyInto(
        dst,
        { shape: p.g.shape, strides: st, offset: p.begin.reduce((a, b, i) => a + b * st[i]!, 0) },
        p.g.storage,
        { shape: p.g.shape, strides: stridesOf(p.g.shape), offset: 0 },
      );
    }
    out = Tensor._fromStorage(dst, x.shape, be);
  }
  return dense ? binary("add", dense, out) : out;
}

function backward(tape: Tape, out: Tensor, seed: Tensor, wrt: readonly Tensor[]): Tensor[] {
  const cot = new Map<Tensor, Tensor>();
  // Slices' cotangents by the tensor sliced, written into its cotangent when that is read.
  // Only when the reverse pass is not recorded by an outer tape or a jvp (assemble's result
  // has no rules); otherwise every slice runs its vjp.
  const pieces = new Map<Tensor, Piece[]>();
  const byRegion = activeTapes.length === 0 && activeJvpLevels.length === 0;
  const cotOf = (x: Tensor): Tensor | undefined => {
    const ps = pieces.get(x);
    if (!ps) return cot.get(x);
    pieces.delete(x);
    const g = assemble(x, cot.get(x), ps);
    cot.set(x, g);
    return g;
  };
  cot.set(out, seed);
  const want = new Set(wrt);
  for (let i = tape.nodes.length - 1; i >= 0; i--) {
    const node = tape.nodes[i]!;
    const g = cotOf(node.out);
    if (!g) continue;
    if (!want.has(node.out)) cot.delete(node.out);
    const need = node.inputs.map((x) => x._tapes?.has(tape.id) === true);
    if (node.region && byRegion) {
      const x = node.inputs[0]!;
      if (need[0]) {
        const ps = pieces.get(x);
        if (ps) ps.push({ g, begin: node.region });
        else pieces.set(x, [{ g, begin: node.region }]);
      }
      continue;
    }
    // A rule that accumulates gets the cotangents so far of the inputs it lists (slices' pieces
    // included; an input passed twice: at its first position only) and returns their totals,
    // so the add below disappears into its kernel (DiT's residual stream: dy + the LayerNorm
    // backward's dx).
    const acc = node.accumulates
      ? node.inputs.map((x, j) =>
        need[j] && node.accumulates!.includes(j) && node.inputs.indexOf(x) === j
          ? cotOf(x) ?? null
          : null
      )
      : undefined;
    const gs = acc ? node.vjp(g, need, acc) : node.vjp(g, need);
    node.inputs.forEach((x, j) => {
      const gx = gs[j];
      if (!gx || !x._tapes?.has(tape.id)) return;
      const prev = cot.get(x);
      cot.set(x, prev && !acc?.[j] ? binary("add", prev, gx) : gx);
    });
  }
  return wrt.map((w) => cotOf(w) ?? zerosOn(w.backend, w.shape));
}

/** Options for `valueAndGrad` and `grad`. */
export interface GradOptions {
  /** The function returns `[loss, aux]`; aux (a tree of tensors) is returned untouched. */
  hasAux?: boolean;
}

/**
 * Turn `f(params, ...rest) -> scalar` into a function returning `[value, grads]`, where
 * `grads` has the structure of `params` (a tensor or a tree of tensors). The parameters are
 * tracked in place, so `f` may also reach them through a module instead of its argument.
 * Every intermediate tensor is freed when the call returns.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor, valueAndGrad } from "../../mod.ts";
 * const f = (p: { w: ReturnType<typeof tensor> }) => p.w.mul(p.w).sum();
 * const [v, g] = valueAndGrad(f)({ w: tensor([1, 2, 3]) });
 * assert.equal(await v.item(), 14); // 1 + 4 + 9
 * assert.deepEqual([...await g.w.data()], [2, 4, 6]); // 2w
 * ```
 */
export function valueAndGrad<P extends TensorTree, A extends unknown[]>(
  f: (params: P, ...rest: A) => Tensor,
  opts?: GradOptions & { hasAux?: false },
): (params: P, ...rest: A) => [Tensor, P];
/** With `hasAux: true`, `f` returns `[loss, aux]` and the result is `[[loss, aux], grads]`. */
export function valueAndGrad<P extends TensorTree, A extends unknown[], X>(
  f: (params: P, ...rest: A) => [Tensor, X],
  opts: GradOptions & { hasAux: true },
): (params: P, ...rest: A) => [[Tensor, X], P];
export function valueAndGrad(
  // deno-lint-ignore no-explicit-any
  f: (params: any, ...rest: any[]) => any,
  opts: GradOptions = {},
  // deno-lint-ignore no-explicit-any
): (params: any, ...rest: any[]) => any {
  return (params: TensorTree, ...rest: unknown[]) => {
    const leaves = treeLeaves(params);
    const tape = new Tape();
    const added: Tensor[] = [];
    for (const p of leaves) {
      if (!(p._tapes ??= new Set()).has(tape.id)) {
        p._tapes.add(tape.id);
        added.push(p);
      }
    }
    const outer = activeTapes.length > 0;
    const scope = _pushScope();
    activeTapes.push(tape);
    let value: Tensor, aux: unknown;
    let grads: Tensor[];
    try {
      const r = f(params, ...rest);
      if (opts.hasAux) [value, aux] = r as [Tensor, unknown];
      else value = r as Tensor;
      if (!(value instanceof Tensor) || value.size !== 1) {
        throw new TypeError(
          `valueAndGrad needs f to return a tensor of size 1 but it returned ${
            value instanceof Tensor ? `shape ${fmtShape(value.shape)}` : typeof value
          }`,
        );
      }
    } catch (e) {
      activeTapes.splice(activeTapes.indexOf(tape), 1);
      releaseHeld(tape);
      for (const p of added) p._tapes!.delete(tape.id);
      _popScope(scope, new Set(), true);
      throw e;
    }
    activeTapes.splice(activeTapes.indexOf(tape), 1);
    releaseHeld(tape);
    try {
      grads = backward(tape, value, onesScalar(value), leaves);
      // Gradients must not alias parameters (a parameter returned as-is has grad = seed) nor
      // each other (add's vjp hands the same cotangent to both inputs): each returned tensor
      // must be disposable on its own, so repeats get their own handle on the storage.
      const seen = new Set<Tensor>(leaves);
      grads = grads.map((g) => {
        if (seen.has(g)) return identity(g);
        seen.add(g);
        return g;
      });
    } finally {
      for (const p of added) p._tapes!.delete(tape.id);
    }
    const keepSet = new Set<Tensor>([value, ...grads, ...treeLeaves(aux)]);
    _popScope(scope, keepSet, !outer);
    let gi = 0;
    const gradTree = treeMap(params, () => grads[gi++]!);
    return opts.hasAux ? [[value, aux], gradTree] : [value, gradTree];
  };
}

function onesScalar(v: Tensor): Tensor {
  const be = v.backend;
  return Tensor._fromStorage(be.fill(v.size, 1), v.shape, be);
}

/**
 * Gradient of a scalar function with respect to its first argument (a tensor or tree).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { grad, tensor } from "../../mod.ts";
 * const g = await grad((x: ReturnType<typeof tensor>) => x.exp().sum())(tensor([0, 1])).data();
 * assert.ok(Math.abs(g[0]! - 1) < 1e-6 && Math.abs(g[1]! - Math.E) < 1e-6); // d eˣ = eˣ
 * ```
 */
export function grad<P extends TensorTree, A extends unknown[]>(
  f: (params: P, ...rest: A) => Tensor,
): (params: P, ...rest: A) => P {
  const vg = valueAndGrad(f);
  return (params: P, ...rest: A) => {
    const [v, g] = vg(params, ...rest);
    v.dispose();
    return g;
  };
}

/**
 * Vector-Jacobian product: returns `[f(x), (cotangent) => cotangent · ∂f/∂x]` for tensor `x`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ones, tensor, vjp } from "../../mod.ts";
 * const [y, back] = vjp((x) => x.mul(x), tensor([1, 2]));
 * assert.deepEqual([...await y.data()], [1, 4]);
 * assert.deepEqual([...await back(ones([2])).data()], [2, 4]); // 1ᵀ·diag(2x)
 * ```
 */
export function vjp(
  f: (x: Tensor) => Tensor,
  x: Tensor,
): [Tensor, (cotangent: Tensor) => Tensor] {
  const tape = new Tape();
  (x._tapes ??= new Set()).add(tape.id);
  activeTapes.push(tape);
  let y: Tensor;
  try {
    y = f(x);
  } finally {
    activeTapes.splice(activeTapes.indexOf(tape), 1);
    releaseHeld(tape);
    x._tapes!.delete(tape.id);
  }
  return [y, (ct: Tensor) => {
    x._tapes!.add(tape.id);
    try {
      return backward(tape, y, ct, [x])[0]!;
    } finally {
      x._tapes!.delete(tape.id);
    }
  }];
}

/**
 * Forward-mode Jacobian-vector product: returns `[f(...primals), directional derivative]`.
 * Works inside `valueAndGrad`, so a loss built from a jvp (e.g. ∂ₜ of a flow map in
 * Lagrangian self-distillation) can be differentiated.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { jvp, tensor } from "../../mod.ts";
 * // f(x) = Σx², ∇f = 2x = [2, 4]; along the tangent [1, 0] the derivative is 2.
 * const [y, dy] = jvp((x) => x.mul(x).sum(), [tensor([1, 2])], [tensor([1, 0])]);
 * assert.equal(await y.item(), 5);
 * assert.equal(await dy.item(), 2);
 * ```
 */
export function jvp<R extends TensorTree>(
  // deno-lint-ignore no-explicit-any
  f: (...primals: any[]) => R,
  primals: readonly Tensor[],
  tangents: readonly Tensor[],
): [R, R] {
  if (primals.length !== tangents.length) {
    throw new RangeError(
      `jvp needs one tangent per primal but found ${primals.length} primals and ${tangents.length} tangents`,
    );
  }
  primals.forEach((p, i) => {
    const t = tangents[i]!;
    if (t.size !== p.size || t.rank !== p.rank || t.shape.some((d, j) => d !== p.shape[j])) {
      throw new RangeError(
        `Tangent ${i} has shape ${fmtShape(t.shape)} but its primal has shape ${fmtShape(p.shape)}`,
      );
    }
  });
  const level = _autodiffState.newLevel();
  const wrapped = primals.map((p, i) => {
    const w = identity(p);
    (w._tangents ??= new Map()).set(level, tangents[i]!);
    return w;
  });
  activeJvpLevels.push(level);
  let out: R;
  try {
    out = f(...wrapped);
  } finally {
    activeJvpLevels.splice(activeJvpLevels.indexOf(level), 1);
  }
  const tan = treeMap(out, (o) => {
    const t = o._tangents?.get(level);
    return t ?? zerosOn(o.backend, o.shape);
  });
  // The wrappers share the primals' storage; free those the caller never sees, or disposing
  // a primal would not release its memory (on an active tape, dispose is deferred).
  const returned = new Set(treeLeaves(out));
  for (const w of wrapped) {
    w._tangents?.delete(level);
    if (!returned.has(w)) w.dispose();
  }
  return [out, tan];
}
