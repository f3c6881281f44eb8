/**
 * @file DiT's gated residual branch (AdaLN-Zero) as one fused op: `gatedResidual(x, g, a)` =
 * x + g·a with a per-sample gate g broadcast over the tokens. The forward is one elementwise
 * pass (the multiply and the add were two, the product written and read back); the backward is
 * the backend's `gatedResidualBackward`, one pass giving da = g·dy and the token sums
 * dg = Σ_tokens a·dy (the multiply's vjp wrote both products, then a reduction read a·dy back),
 * while dx = dy costs nothing. At [64, 49, 128] on `wasm` that is 5 passes of 1.6 MB instead
 * of 10 per branch and step, eight branches a DiT step (depth 4).
 * `gatedResidualComposite` is the same function from primitives: the reference the fused op is
 * tested against, and what its derivatives of the backward (under an outer tape) are built from.
 * @module
 */
import {
  attachRules,
  backendOf,
  binary,
  differentiating,
  reduce,
  reshape,
  Tensor,
  tidy,
} from "../tensor.ts";
import type { Expr } from "../ir.ts";
import { fmtShape } from "../_util.ts";
import { stridesOf } from "../shape.ts";

interface Geometry {
  b: number;
  t: number;
  d: number;
}

const sameShape = (x: Tensor, want: readonly number[]) =>
  x.rank === want.length && x.shape.every((n, i) => n === want[i]);

function geometry(x: Tensor, g: Tensor, a: Tensor): Geometry {
  if (!(x instanceof Tensor) || (x.rank !== 3 && x.rank !== 2)) {
    throw new RangeError(
      `Expected the gatedResidual input x to be a [B, T, D] (or [B, D]) tensor but found ${
        x instanceof Tensor ? fmtShape(x.shape) : typeof x
      }`,
    );
  }
  if (!(a instanceof Tensor) || !sameShape(a, x.shape)) {
    throw new RangeError(
      `Expected the gatedResidual branch a to have the shape of x ${fmtShape(x.shape)} but found ${
        a instanceof Tensor ? fmtShape(a.shape) : typeof a
      }`,
    );
  }
  const b = x.shape[0]!, d = x.shape[x.rank - 1]!, t = x.rank === 3 ? x.shape[1]! : 1;
  if (!(g instanceof Tensor) || !sameShape(g, [b, d])) {
    throw new RangeError(
      `Expected the gatedResidual gate g to have shape [${b}, ${d}] (one row per sample of x ${
        fmtShape(x.shape)
      }) but found ${g instanceof Tensor ? fmtShape(g.shape) : typeof g}`,
    );
  }
  return { b, t, d };
}

/**
 * @internal Whether `gatedResidual` runs the fused path (default) or the composite; tests and
 * A/B benchmarks switch it off to compare both in one process.
 */
export const _fusedGatedResidual = { enabled: true };

// [B, D] → [B, 1, D]: a per-sample row broadcast over the tokens.
const perSample = (v: Tensor, g: Geometry) => reshape(v, [g.b, 1, g.d]);

/**
 * `x + g·a` for `x`, `a [B, T, D]` and a per-sample gate `g [B, D]` broadcast over the T tokens,
 * composed of primitives (a broadcast multiply, then an add). The reference for
 * {@linkcode gatedResidual} (the same bits forward). `x [B, D]` is one token per sample.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gatedResidualComposite, tensor } from "../../mod.ts";
 * // One sample, two tokens of width 2: the gate [10, 100] scales each token of a.
 * const y = gatedResidualComposite(tensor([[[1, 1], [2, 2]]]), tensor([[10, 100]]), tensor([[[1, 2], [3, 4]]]));
 * assert.deepEqual([...await y.data()], [11, 201, 32, 402]);
 * ```
 */
export function gatedResidualComposite(x: Tensor, g: Tensor, a: Tensor): Tensor {
  const geo = geometry(x, g, a);
  return tidy(() => {
    const a3 = reshape(a, [geo.b, geo.t, geo.d]);
    const y = binary(
      "add",
      reshape(x, [geo.b, geo.t, geo.d]),
      binary("mul", perSample(g, geo), a3),
    );
    return reshape(y, x.shape);
  });
}

const IN: readonly Expr[] = [0, 1, 2].map((index) => ({ kind: "input", index }));
// x + g·a over inputs x, g, a: the multiply, then the add (the composite's two roundings).
const FORWARD: Expr = {
  kind: "binary",
  op: "add",
  a: IN[0]!,
  b: { kind: "binary", op: "mul", a: IN[1]!, b: IN[2]! },
};

/**
 * DiT's gated residual branch `x + g·a` (AdaLN-Zero: `x + gate·attn(…)`, `x + gate·mlp(…)`) for
 * `x`, `a [B, T, D]` and a per-sample gate `g [B, D]` broadcast over the T tokens (`x [B, D]`
 * is one token per sample), as one fused op: one elementwise pass forward (the same bits as
 * {@linkcode gatedResidualComposite}), and under a tape one backward pass giving
 * `da = g·dy` and the token sums `dg = Σ_t a·dy` (dx is dy itself; dg within f32 summation
 * rounding of the composite's). Differentiable in both modes; forward mode and derivatives of
 * the backward (a gradient under an outer tape) use the composite formulas.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { grad, gatedResidual, gatedResidualComposite, randn } from "../../mod.ts";
 * const x = randn([2, 3, 4], { seed: 0 }), g = randn([2, 4], { seed: 1 }), a = randn([2, 3, 4], { seed: 2 });
 * assert.deepEqual([...await gatedResidual(x, g, a).data()], [...await gatedResidualComposite(x, g, a).data()]);
 * // The gradient of Σ y² with respect to the gate, both ways.
 * const loss = (f: typeof gatedResidual) => (gg: typeof g) => f(x, gg, a).square().sum();
 * const ga = await grad(loss(gatedResidual))(g).data();
 * const gb = await grad(loss(gatedResidualComposite))(g).data();
 * ga.forEach((v, i) => assert.ok(Math.abs(v - gb[i]!) < 1e-4));
 * ```
 */
export function gatedResidual(x: Tensor, g: Tensor, a: Tensor): Tensor {
  const geo = geometry(x, g, a);
  if (!_fusedGatedResidual.enabled) return gatedResidualComposite(x, g, a);
  const be = backendOf([x, g, a]);
  const shape = [geo.b, geo.t, geo.d], dense = stridesOf(shape);
  const [ys] = be.elementwise(
    [FORWARD],
    [x.storage, g.storage, a.storage],
    [dense, [geo.d, 0, 1], dense],
    shape,
  );
  const out = Tensor._fromStorage(ys!, x.shape, be);
  const inputs = [x, g, a];
  if (!differentiating(inputs)) return out;
  attachRules(out, inputs, {
    vjp: (gy, need) => {
      const [nx, ng, na] = need.map((n) => n !== false);
      let dg: Tensor | null = null, da: Tensor | null = null;
      if (ng || na) {
        if (differentiating([...inputs, out, gy])) {
          // A gradient that is itself differentiated (an outer tape tracks these) needs rules
          // for the backward: the composite's, whose every op has them.
          [da, dg] = compositeVjp(g, a, gy, geo, ng, na);
        } else {
          const [das, dgs] = be.gatedResidualBackward(
            g.storage,
            a.storage,
            gy.storage,
            geo.b,
            geo.t,
            geo.d,
          );
          da = Tensor._fromStorage(das, a.shape, be);
          dg = Tensor._fromStorage(dgs, g.shape, be);
          if (!na) (da.dispose(), da = null);
          if (!ng) (dg.dispose(), dg = null);
        }
      }
      return [nx ? gy : null, dg, da];
    },
    // tx + (tg·a + g·ta), from primitives (differentiable again), summed in the composite's
    // order (the multiply's tangent, then the add's): the same bits.
    jvp: ([tx, tg, ta]) =>
      tidy(() => {
        const pa = tg ? binary("mul", perSample(tg, geo), reshape(a, shape)) : null;
        const pb = ta ? binary("mul", perSample(g, geo), reshape(ta, shape)) : null;
        const tm = pa && pb ? binary("add", pa, pb) : pa ?? pb;
        const tx3 = tx ? reshape(tx, shape) : null;
        return reshape(tx3 && tm ? binary("add", tx3, tm) : (tx3 ?? tm)!, x.shape);
      }),
  });
  return out;
}

// da = g·dy, dg = Σ_t a·dy from primitives (those wanted).
function compositeVjp(
  g: Tensor,
  a: Tensor,
  gy: Tensor,
  geo: Geometry,
  ng: boolean,
  na: boolean,
): [Tensor | null, Tensor | null] {
  return tidy(() => {
    const dy = reshape(gy, [geo.b, geo.t, geo.d]);
    const da = na ? reshape(binary("mul", perSample(g, geo), dy), a.shape) : null;
    const dg = ng
      ? reshape(reduce("sum", binary("mul", reshape(a, [geo.b, geo.t, geo.d]), dy), [1]), g.shape)
      : null;
    return [da, dg];
  });
}
