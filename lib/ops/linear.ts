/**
 * @file `linear`: act(x·wᵀ + b) as one primitive. The bias add and activation are the
 * matmul's epilogue (an expression over the op table, applied as the output is stored), so a
 * hidden layer is one dispatch instead of three.
 * @module
 */
import {
  _autodiffState,
  attachRules,
  backendOf,
  binary,
  broadcastTo,
  differentiating,
  evalExprs,
  matmul,
  reduce,
  reshape,
  Tensor,
  unary,
} from "../tensor.ts";
import { chain, type Expr, exprInputs, type MatmulGeom, unaryDerivative } from "../ir.ts";
import { checkChoice, fmtShape } from "../_util.ts";

/**
 * Activations {@link linear} can fuse into the matmul epilogue (`geluTanh`: GELU's tanh
 * approximation, as `unary("geluTanh")`).
 */
export type LinearActivation = "silu" | "gelu" | "geluTanh" | "relu" | "tanh" | "sigmoid";

/** Options for {@link linear}. */
export interface LinearOpOptions {
  /** Applied after the bias add (default none). */
  activation?: LinearActivation | null;
}

const ACTIVATIONS = ["silu", "gelu", "geluTanh", "relu", "tanh", "sigmoid"] as const;
const IN: readonly Expr[] = [0, 1, 2].map((index) => ({ kind: "input", index }));

// d act/dz from the op table, over leaves z (input 1) and y = act(z) (input 2).
const actDeriv = (act: LinearActivation) => unaryDerivative(act, IN[1]!, IN[2]!, 0, 0)!;
// Whether the derivative reads z, or only the output (relu, tanh, sigmoid: no z needed).
const needsZ = (act: LinearActivation) => exprInputs([actDeriv(act)]).includes(1);

/**
 * d act/dz times `g`, as one fused kernel (op by op when differentiated again), from the
 * output `y` alone when the op's derivative allows, else from the pre-activation `z()`.
 */
function actGrad(act: LinearActivation, g: Tensor, z: () => Tensor, y: Tensor): Tensor {
  const d = actDeriv(act);
  return evalExprs([g, needsZ(act) ? z() : y, y], [chain(IN[0]!, d)], y.shape, false)[0]!;
}

/**
 * A layer's weight and bias gradients, dzᵀ·x and Σ_rows dz, for `dz [rows, out]` and
 * `x [rows, in]` (either may be unwanted): one backend call that sums dz as the product reads
 * it (Backend.matmulBiasGrad, the same values) when both are wanted and neither is itself
 * differentiated; else the two ops, with their rules.
 */
function weightGrads(
  dz: Tensor,
  x: Tensor,
  wantW: boolean,
  wantB: boolean,
): [Tensor | null, Tensor | null] {
  if (wantW && wantB && !differentiating([dz, x])) {
    const be = backendOf([dz, x]);
    const [rows, nOut] = dz.shape as [number, number], nIn = x.shape[1]!;
    const [w, b] = be.matmulBiasGrad(dz.storage, x.storage, nOut, nIn, rows);
    return [Tensor._fromStorage(w, [nOut, nIn], be), Tensor._fromStorage(b, [nOut], be)];
  }
  return [
    wantW ? matmul(dz, x, { transA: true }) : null,
    wantB ? reduce("sum", dz, [0]) : null,
  ];
}

function taped(inputs: readonly Tensor[]): boolean {
  const tapes = _autodiffState.activeTapes;
  return tapes.length > 0 && inputs.some((t) => tapes.some((tp) => t._tapes?.has(tp.id)));
}

/**
 * A fully connected layer, `act(x·wᵀ + b)`, in PyTorch layout: `x [..., in]`, `w [out, in]`,
 * `b [out]` (optional), result `[..., out]`. Matches `act(add(matmul(x, w, {transB: true}),
 * b))` but runs as one matmul whose epilogue adds the bias and applies the activation.
 * Differentiable in both modes. relu, tanh and sigmoid take their derivative from the
 * output, so they stay one op under a tape. silu, gelu and geluTanh need the pre-activation
 * z = x·wᵀ + b: under a tape they run as two ops (matmul + bias, then the activation, whose
 * rule reads the stored z), because recomputing z in the rule costs a matmul per layer,
 * which measured slower than the unfused layer; outside a tape (sampling, forward-mode jvp)
 * they are one op and the jvp rule recomputes z.
 * (A layer followed by another, as a transformer's MLP, is {@link feedForward}: there the
 * activation's derivative is stored with it instead of z.)
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { linear, tensor } from "../../mod.ts";
 * const x = tensor([[1, 2]]), w = tensor([[1, 0], [0, -1], [1, 1]]);
 * const y = linear(x, w, tensor([0, 1, -4]), { activation: "relu" });
 * // x·wᵀ + b = [1, −2, 3] + [0, 1, −4] = [1, −1, −1]; relu → [1, 0, 0]
 * assert.deepEqual([...await y.data()], [1, 0, 0]);
 * ```
 */
export function linear(
  x: Tensor,
  w: Tensor,
  b?: Tensor | null,
  opts: LinearOpOptions = {},
): Tensor {
  if (!(x instanceof Tensor) || x.rank < 1) {
    throw new TypeError(
      `Expected linear input x to be a Tensor of rank >= 1 but found ${
        x instanceof Tensor ? fmtShape(x.shape) : typeof x
      }`,
    );
  }
  if (!(w instanceof Tensor) || w.rank !== 2) {
    throw new TypeError(
      `Expected linear weight w to be a 2-D [out, in] Tensor but found ${
        w instanceof Tensor ? fmtShape(w.shape) : typeof w
      }`,
    );
  }
  const [nOut, nIn] = w.shape as [number, number];
  if (x.shape[x.rank - 1] !== nIn) {
    throw new RangeError(
      `Expected linear input x to end in ${nIn} features (weight ${fmtShape(w.shape)}) but found ${
        fmtShape(x.shape)
      }`,
    );
  }
  const bias = b ?? null;
  if (bias !== null && (!(bias instanceof Tensor) || bias.rank !== 1 || bias.size !== nOut)) {
    throw new RangeError(
      `Expected linear bias b to have shape [${nOut}] but found ${
        bias instanceof Tensor ? fmtShape(bias.shape) : typeof bias
      }`,
    );
  }
  const act = opts.activation == null
    ? null
    : checkChoice("linear activation", opts.activation, ACTIVATIONS);
  const inputs = bias ? [x, w, bias] : [x, w];
  const be = backendOf(inputs);
  const outShape = [...x.shape.slice(0, -1), nOut];
  const pre = () => {
    const y = matmul(x, w, { transB: true });
    return bias ? binary("add", y, bias) : y;
  };
  // Under a tape, an activation whose derivative needs z (silu, gelu, geluTanh) splits into
  // epilogue(bias) then the unary op, whose vjp reads the stored z: recomputing z in the
  // backward pass (one more matmul per layer) made a training step of a 3×256 VelocityMLP
  // slower than the unfused three ops on lavapipe (59 vs 40 ms at batch 1024). relu, tanh and
  // sigmoid need only the output and stay fused.
  if (act && needsZ(act) && taped(inputs)) {
    return unary(act, linear(x, w, bias, {}));
  }
  const rows = x.shape.slice(0, -1).reduce((p, q) => p * q, 1);
  // act(acc + bias) as the matmul's epilogue: one dispatch for the whole layer.
  const z: Expr = bias ? { kind: "binary", op: "add", a: IN[0]!, b: IN[1]! } : IN[0]!;
  const epilogue = act || bias
    ? {
      expr: act ? { kind: "unary" as const, op: act, x: z, p0: 0, p1: 0 } : z,
      rows: bias ? [bias.storage] : [],
    }
    : undefined;
  // x is contiguous, so its leading axes flatten into the m rows of one 2-D matmul.
  const s = be.matmul(
    x.storage,
    w.storage,
    {
      batch: 1,
      m: rows,
      n: nOut,
      k: nIn,
      transA: false,
      transB: true,
      aBatchStride: 0,
      bBatchStride: 0,
    },
    epilogue,
  );
  // Output first, then rules: forward mode runs the jvp rule inside attachRules, and the
  // rules read the output.
  const out = Tensor._fromStorage(s, outShape, be);
  // dz: the cotangent (or tangent) through the activation, applied to a tensor shaped like out.
  const through = (g: Tensor) => (act ? actGrad(act, g, pre, out) : g);
  attachRules(out, inputs, {
    vjp: (g, need) => {
      const dz = through(g);
      const dz2 = reshape(dz, [rows, nOut]);
      const x2 = reshape(x, [rows, nIn]);
      const [dw, db] = weightGrads(dz2, x2, need[1] !== false, bias !== null && need[2] !== false);
      return [need[0] === false ? null : matmul(dz, w), dw, ...(bias ? [db] : [])];
    },
    jvp: ([tx, tw, tb]) => {
      let tz: Tensor | null = tx ? matmul(tx, w, { transB: true }) : null;
      if (tw) {
        const p = matmul(x, tw, { transB: true });
        tz = tz ? binary("add", tz, p) : p;
      }
      if (tb) tz = tz ? binary("add", tz, tb) : broadcastTo(tb, outShape);
      return through(tz!);
    },
  });
  return out;
}

/** Options for {@link feedForward}. */
export interface FeedForwardOptions {
  /** Between the two layers (default none). */
  activation?: LinearActivation | null;
}

/**
 * @internal Whether `feedForward` runs its fused primitive under a tape (default) or the two
 * `linear` ops; tests and A/B benchmarks switch it off to compare both in one process.
 */
export const _fusedFeedForward = { enabled: true };

// A 2-D product's geometry: [m, k]·[n, k]ᵀ (transB) or [m, k]·[k, n].
const geom = (m: number, n: number, k: number, transB: boolean): MatmulGeom => ({
  batch: 1,
  m,
  n,
  k,
  transA: false,
  transB,
  aBatchStride: 0,
  bBatchStride: 0,
});

// w [out, in] and b [out] of a layer whose input's shape is `inShape`.
function checkLinearArgs(
  inShape: readonly number[],
  w: Tensor,
  b: Tensor | null,
  what: string,
): void {
  if (!(w instanceof Tensor) || w.rank !== 2) {
    throw new TypeError(
      `Expected feedForward ${what} weight to be a 2-D [out, in] Tensor but found ${
        w instanceof Tensor ? fmtShape(w.shape) : typeof w
      }`,
    );
  }
  if (inShape[inShape.length - 1] !== w.shape[1]) {
    throw new RangeError(
      `Expected feedForward ${what} input to end in ${w.shape[1]} features (weight ${
        fmtShape(w.shape)
      }) but found ${fmtShape(inShape)}`,
    );
  }
  if (b !== null && (!(b instanceof Tensor) || b.rank !== 1 || b.size !== w.shape[0])) {
    throw new RangeError(
      `Expected feedForward ${what} bias to have shape [${w.shape[0]}] but found ${
        b instanceof Tensor ? fmtShape(b.shape) : typeof b
      }`,
    );
  }
}

/**
 * A transformer's feed-forward, `linear(act(linear(x, w1, b1)), w2, b2)` (timm's `Mlp`: fc1,
 * activation, fc2), as one primitive under a tape. `x [..., in]`, `w1 [hidden, in]`,
 * `w2 [out, hidden]`, biases optional; result `[..., out]`. Under a tape the first product
 * stores the activation a = act(z) and its derivative act′(z) (instead of z), and the backward
 * pass computes dz = act′(z)·(dy·w2) as one more such product (`Backend.matmulOutputs`): on the
 * `wasm` backend GELU-tanh and that product run inside the SGEMM's stores, which removes the two
 * memory-bound elementwise passes over the [rows, hidden] activations a step (in a DiT block,
 * 3 of 7 streams of 3136 × 512 floats). Outside a tape it is the two `linear` ops (the
 * activation in the first one's epilogue). The same values as the two `linear` ops and the
 * activation between them; differentiable in both modes (forward mode and derivatives of the
 * backward pass use the ops' own rules).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { feedForward, grad, linear, randn } from "../../mod.ts";
 * const x = randn([2, 3, 4], { seed: 0 }), w1 = randn([8, 4], { seed: 1 });
 * const b1 = randn([8], { seed: 2 }), w2 = randn([4, 8], { seed: 3 });
 * const ff = (w: typeof w1) => feedForward(x, w, b1, w2, null, { activation: "geluTanh" });
 * const ref = (w: typeof w1) => linear(linear(x, w, b1, { activation: "geluTanh" }), w2);
 * const ga = await grad((w: typeof w1) => ff(w).square().sum())(w1).data();
 * const gb = await grad((w: typeof w1) => ref(w).square().sum())(w1).data();
 * ga.forEach((v, i) => assert.ok(Math.abs(v - gb[i]!) < 1e-4));
 * ```
 */
export function feedForward(
  x: Tensor,
  w1: Tensor,
  b1: Tensor | null,
  w2: Tensor,
  b2: Tensor | null,
  opts: FeedForwardOptions = {},
): Tensor {
  if (!(x instanceof Tensor) || x.rank < 1) {
    throw new TypeError(
      `Expected feedForward input x to be a Tensor of rank >= 1 but found ${
        x instanceof Tensor ? fmtShape(x.shape) : typeof x
      }`,
    );
  }
  checkLinearArgs(x.shape, w1, b1 ?? null, "fc1");
  checkLinearArgs([...x.shape.slice(0, -1), w1.shape[0]!], w2, b2 ?? null, "fc2");
  const act = opts.activation == null
    ? null
    : checkChoice("feedForward activation", opts.activation, ACTIVATIONS);
  const bias1 = b1 ?? null, bias2 = b2 ?? null;
  // Inputs x, w1, w2, then the biases there are.
  const inputs = [x, w1, w2, ...(bias1 ? [bias1] : []), ...(bias2 ? [bias2] : [])];
  const ib1 = bias1 ? 3 : -1, ib2 = bias2 ? inputs.length - 1 : -1;
  const composite = () => linear(linear(x, w1, bias1, { activation: act }), w2, bias2);
  if (!_fusedFeedForward.enabled || act === null || !taped(inputs)) return composite();
  const be = backendOf(inputs);
  const [hidden, nIn] = w1.shape as [number, number], nOut = w2.shape[0]!;
  const rows = x.shape.slice(0, -1).reduce((p, q) => p * q, 1);
  const outShape = [...x.shape.slice(0, -1), nOut];
  // a = act(z) and act′(z), z = x·w1ᵀ + b1, from the first product's sums.
  const z: Expr = bias1 ? { kind: "binary", op: "add", a: IN[0]!, b: IN[1]! } : IN[0]!;
  const yE: Expr = { kind: "unary", op: act, x: z, p0: 0, p1: 0 };
  const [as, ds] = be.matmulOutputs(x.storage, w1.storage, geom(rows, hidden, nIn, true), {
    exprs: [yE, unaryDerivative(act, z, yE, 0, 0)!],
    rows: bias1 ? [bias1.storage] : [],
    dense: [],
  });
  // Under the tape they live as long as the graph (valueAndGrad's scope frees them with the
  // other intermediates).
  const a = Tensor._fromStorage(as!, [rows, hidden], be);
  const dAct = Tensor._fromStorage(ds!, [rows, hidden], be);
  const ys = be.matmul(
    as!,
    w2.storage,
    geom(rows, nOut, hidden, true),
    bias2
      ? { expr: { kind: "binary", op: "add", a: IN[0]!, b: IN[1]! }, rows: [bias2.storage] }
      : undefined,
  );
  const out = Tensor._fromStorage(ys, outShape, be);
  // The layer's pre-activation and activation recomputed by ops (for the rules below that must
  // themselves be differentiable).
  const pre = () => linear(x, w1, bias1);
  attachRules(out, inputs, {
    vjp: (g, need) => {
      const want = (i: number) => i >= 0 && need[i] !== false;
      const g2 = reshape(g, [rows, nOut]), x2 = reshape(x, [rows, nIn]);
      let dz: Tensor | null = null, a2 = a;
      if (differentiating([g, ...inputs])) {
        // A gradient that is itself differentiated: the ops' formulas, every op with rules.
        const z2 = reshape(pre(), [rows, hidden]);
        a2 = unary(act, z2);
        if (want(0) || want(1) || want(ib1)) dz = actGrad(act, matmul(g2, w2), () => z2, a2);
      } else if (want(0) || want(1) || want(ib1)) {
        // dz = act′(z)·(dy·w2) in the product's stores.
        const [dzs] = be.matmulOutputs(g.storage, w2.storage, geom(rows, hidden, nOut, false), {
          exprs: [{ kind: "binary", op: "mul", a: IN[0]!, b: IN[1]! }],
          rows: [],
          dense: [dAct.storage],
        });
        dz = Tensor._fromStorage(dzs!, [rows, hidden], be);
      }
      const [dw1, db1] = weightGrads(dz!, x2, want(1), want(ib1));
      const [dw2, db2] = weightGrads(g2, a2, want(2), want(ib2));
      const grads: (Tensor | null)[] = [
        want(0) ? reshape(matmul(dz!, w1), x.shape) : null,
        dw1,
        dw2,
      ];
      if (bias1) grads.push(db1);
      if (bias2) grads.push(db2);
      return grads;
    },
    jvp: (ts) => {
      // The tangent through both layers by ops: tz = tx·w1ᵀ + x·tw1ᵀ + tb1, ta = act′(z)·tz,
      // ty = ta·w2ᵀ + a·tw2ᵀ + tb2.
      const [tx, tw1, tw2] = ts as (Tensor | null)[];
      const tb1 = ib1 >= 0 ? ts[ib1] : null, tb2 = ib2 >= 0 ? ts[ib2] : null;
      const z1 = pre(), a1 = unary(act, z1);
      const sum = (p: Tensor | null, q: Tensor | null) => (p && q ? binary("add", p, q) : p ?? q);
      let tz = sum(
        tx ? matmul(tx, w1, { transB: true }) : null,
        tw1 ? matmul(x, tw1, { transB: true }) : null,
      );
      if (tb1) tz = tz ? binary("add", tz, tb1) : broadcastTo(tb1, z1.shape);
      const ta = tz ? actGrad(act, tz, () => z1, a1) : null;
      let ty = sum(
        ta ? matmul(ta, w2, { transB: true }) : null,
        tw2 ? matmul(a1, tw2, { transB: true }) : null,
      );
      if (tb2) ty = ty ? binary("add", ty, tb2) : broadcastTo(tb2, outShape);
      return ty;
    },
  });
  return out;
}
