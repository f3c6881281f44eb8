/**
 * @file DiT's "LayerNorm, then AdaLN modulation" as one fused op: `layerNormModulate` runs the
 * backend's `layerNormModulate` (one kernel on WebGPU, saving each row's mean and 1/σ) and,
 * under a tape, its `layerNormModulateBackward` (dx, and the per-sample token sums that are the
 * shift and scale gradients). The composite it replaces — mean, centre, variance, rsqrt,
 * scale, modulate, and their backward with two token-sum reductions — was ~27 dispatches a call
 * on WebGPU and ~17 ms of CPU on `wasm` at [64, 49, 128], nine calls a DiT step.
 * `layerNormModulateComposite` is the same function from primitives: the reference the fused
 * op is tested against, and what its forward-mode and higher-order rules are built from (so
 * every derivative order stays exact).
 * @module
 */
import {
  attachRules,
  backendOf,
  binary,
  broadcastTo,
  differentiating,
  mean,
  reduce,
  reshape,
  Tensor,
  tidy,
  unary,
} from "../tensor.ts";
import { layerNorm } from "./ops.ts";
import { checkNumber, fmtShape } from "../_util.ts";

interface Geometry {
  b: number;
  t: number;
  d: number;
  eps: number;
}

const shapeOk = (x: Tensor, want: readonly number[]) =>
  x.rank === want.length && x.shape.every((n, i) => n === want[i]);

function geometry(x: Tensor, shift: Tensor, scale: Tensor, eps: number): Geometry {
  if (!(x instanceof Tensor) || (x.rank !== 3 && x.rank !== 2)) {
    throw new RangeError(
      `Expected the layerNormModulate input x to be a [B, T, D] (or [B, D]) tensor but found ${
        x instanceof Tensor ? fmtShape(x.shape) : typeof x
      }`,
    );
  }
  const b = x.shape[0]!, d = x.shape[x.rank - 1]!, t = x.rank === 3 ? x.shape[1]! : 1;
  for (const [name, v] of [["shift", shift], ["scale", scale]] as const) {
    if (!(v instanceof Tensor) || !shapeOk(v, [b, d])) {
      throw new RangeError(
        `Expected the layerNormModulate ${name} to have shape [${b}, ${d}] (one row per sample ` +
          `of x ${fmtShape(x.shape)}) but found ${
            v instanceof Tensor ? fmtShape(v.shape) : typeof v
          }`,
      );
    }
  }
  return { b, t, d, eps: checkNumber("layerNormModulate eps", eps, 0) };
}

/**
 * @internal Whether `layerNormModulate` runs the fused backend op (default) or the composite;
 * tests and A/B benchmarks switch it off to compare both in one process.
 */
export const _fusedLayerNormModulate = { enabled: true };

// [B, D] → [B, 1, D]: a per-sample row broadcast over the tokens.
const perSample = (v: Tensor, g: Geometry) => reshape(v, [g.b, 1, g.d]);

/**
 * LayerNorm over the last axis (no affine, biased variance) followed by DiT's modulation
 * `·(1 + scale) + shift`, composed of primitives: {@linkcode layerNorm} then the broadcast
 * multiply and add. The reference for {@linkcode layerNormModulate} (same values up to f32
 * rounding). Shapes as there.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { layerNormModulateComposite, tensor } from "../../mod.ts";
 * // One sample, one token [1, 3]: mean 2, variance 2/3; scale 1 doubles it, shift adds 5.
 * const y = await layerNormModulateComposite(tensor([[[1, 2, 3]]]), tensor([[5, 5, 5]]), tensor([[1, 1, 1]]), 0).data();
 * const r = 1 / Math.sqrt(2 / 3);
 * [5 - 2 * r, 5, 5 + 2 * r].forEach((v, i) => assert.ok(Math.abs(y[i]! - v) < 1e-5));
 * ```
 */
export function layerNormModulateComposite(
  x: Tensor,
  shift: Tensor,
  scale: Tensor,
  eps = 1e-6,
): Tensor {
  const g = geometry(x, shift, scale, eps);
  return tidy(() => {
    const x3 = reshape(x, [g.b, g.t, g.d]);
    const y = layerNorm(x3, undefined, undefined, g.eps);
    const s1 = unary("affine", perSample(scale, g), 1, 1);
    return reshape(binary("add", binary("mul", y, s1), perSample(shift, g)), x.shape);
  });
}

/**
 * LayerNorm over the last axis without affine (biased variance, as `torch.nn.LayerNorm(d,
 * elementwise_affine=False)`), then DiT's AdaLN modulation, in one fused op:
 * `y[i, j] = (x[i, j] − μ)/√(σ² + eps) · (1 + scale[i]) + shift[i]` for `x [B, T, D]` and
 * per-sample `shift`, `scale [B, D]` broadcast over the T tokens (`x [B, D]` is one token per
 * sample). `eps` defaults to DiT's 1e-6 (not `layerNorm`'s 1e-5). Equal to
 * {@linkcode layerNormModulateComposite} within f32 rounding: one kernel forward, saving each
 * row's mean and 1/σ, and one backward pass giving dx and the token sums dshift = Σ_j dy,
 * dscale = Σ_j dy·x̂ (two kernels on WebGPU). Differentiable in both modes; forward mode and
 * derivatives of the backward (a gradient under an outer tape) use the composite formulas.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { grad, layerNormModulate, layerNormModulateComposite, randn } from "../../mod.ts";
 * const x = randn([2, 3, 5], { seed: 0 }), sh = randn([2, 5], { seed: 1 }), sc = randn([2, 5], { seed: 2 });
 * const a = await layerNormModulate(x, sh, sc).data();
 * const b = await layerNormModulateComposite(x, sh, sc).data();
 * a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) < 1e-5));
 * // The gradient of Σ y² with respect to scale, both ways.
 * const loss = (f: typeof layerNormModulate) => (s: typeof sc) => f(x, sh, s).square().sum();
 * const ga = await grad(loss(layerNormModulate))(sc).data();
 * const gb = await grad(loss(layerNormModulateComposite))(sc).data();
 * ga.forEach((v, i) => assert.ok(Math.abs(v - gb[i]!) < 1e-4));
 * ```
 */
export function layerNormModulate(x: Tensor, shift: Tensor, scale: Tensor, eps = 1e-6): Tensor {
  const g = geometry(x, shift, scale, eps);
  if (!_fusedLayerNormModulate.enabled) return layerNormModulateComposite(x, shift, scale, eps);
  const be = backendOf([x, shift, scale]);
  const [ys, ss] = be.layerNormModulate(
    x.storage,
    shift.storage,
    scale.storage,
    g.b,
    g.t,
    g.d,
    g.eps,
  );
  const out = Tensor._fromStorage(ys, x.shape, be);
  const stats = Tensor._fromStorage(ss, [g.b * g.t, 2], be);
  const inputs = [x, shift, scale];
  if (!differentiating(inputs)) {
    stats.dispose();
    return out;
  }
  // Under a tape, stats lives as long as the graph (valueAndGrad's scope frees it with the
  // other intermediates).
  attachRules(out, inputs, {
    // x's cotangent so far (DiT: the residual connection's dy) comes in as acc[0] and is added
    // as dx is stored, instead of by the tape in a pass of its own.
    accumulates: [0],
    vjp: (gy, need, acc) => {
      const ax = acc?.[0] ?? null;
      // A gradient that is itself differentiated (an outer tape tracks these) needs rules for
      // the backward: take the composite's, whose every op has them.
      const grads = differentiating([...inputs, out, gy, ...(ax ? [ax] : [])])
        ? compositeVjp(x, scale, gy, g, ax)
        : be.layerNormModulateBackward(
          x.storage,
          scale.storage,
          stats.storage,
          gy.storage,
          g.b,
          g.t,
          g.d,
          ax?.storage,
        ).map((s, i) => Tensor._fromStorage(s, i === 0 ? x.shape : [g.b, g.d], be));
      return grads.map((t, i) => {
        if (need[i] !== false) return t;
        t.dispose();
        return null;
      });
    },
    jvp: ([tx, tsh, tsc]) => compositeJvp(x, scale, tx ?? null, tsh ?? null, tsc ?? null, g),
  });
  return out;
}

// x̂ = (x − μ)·r and r = 1/√(σ² + eps) per row of x [B, T, D], as layerNorm computes them.
function normalized(x: Tensor, g: Geometry): { xh: Tensor; r: Tensor } {
  const x3 = reshape(x, [g.b, g.t, g.d]);
  const c = binary("sub", x3, mean(x3, 2, true));
  const r = unary("rsqrt", unary("affine", mean(unary("square", c), 2, true), 1, g.eps));
  return { xh: binary("mul", c, r), r };
}

// With g = dy·(1 + scale): dx = r·(g − mean(g) − x̂·mean(g·x̂)) (plus acc, x's cotangent so
// far, when given), dshift = Σ_t dy, dscale = Σ_t dy·x̂.
function compositeVjp(
  x: Tensor,
  scale: Tensor,
  gy: Tensor,
  g: Geometry,
  acc: Tensor | null,
): Tensor[] {
  return tidy(() => {
    const { xh, r } = normalized(x, g);
    const dy = reshape(gy, [g.b, g.t, g.d]);
    const gs = binary("mul", dy, unary("affine", perSample(scale, g), 1, 1));
    const proj = binary("mul", xh, mean(binary("mul", gs, xh), 2, true));
    const dx = binary("mul", r, binary("sub", binary("sub", gs, mean(gs, 2, true)), proj));
    const dxs = reshape(dx, x.shape);
    return [
      acc ? binary("add", acc, dxs) : dxs,
      reduce("sum", dy, [1]),
      reduce("sum", binary("mul", dy, xh), [1]),
    ];
  });
}

// The tangent: tx̂ = r·(tx − mean(tx) − x̂·mean(tx·x̂)), ty = tx̂·(1 + scale) + x̂·tscale + tshift.
function compositeJvp(
  x: Tensor,
  scale: Tensor,
  tx: Tensor | null,
  tsh: Tensor | null,
  tsc: Tensor | null,
  g: Geometry,
): Tensor {
  return tidy(() => {
    const { xh, r } = normalized(x, g);
    const terms: Tensor[] = [];
    if (tx) {
      const t = reshape(tx, [g.b, g.t, g.d]);
      const proj = binary("mul", xh, mean(binary("mul", t, xh), 2, true));
      const txh = binary("mul", r, binary("sub", binary("sub", t, mean(t, 2, true)), proj));
      terms.push(binary("mul", txh, unary("affine", perSample(scale, g), 1, 1)));
    }
    if (tsc) terms.push(binary("mul", xh, perSample(tsc, g)));
    // A [B, T, D] sum even when only the shift has a tangent (it is broadcast over tokens).
    if (tsh) terms.push(broadcastTo(perSample(tsh, g), [g.b, g.t, g.d]));
    let ty = terms[0]!;
    for (const t of terms.slice(1)) ty = binary("add", ty, t);
    return reshape(ty, x.shape);
  });
}
