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
  evalExprs,
  matmul,
  reduce,
  reshape,
  Tensor,
  unary,
} from "../tensor.ts";
import { chain, type Expr, exprInputs, unaryDerivative } from "../ir.ts";
import { checkChoice, fmtShape } from "../_util.ts";

/** Activations {@link linear} can fuse into the matmul epilogue. */
export type LinearActivation = "silu" | "gelu" | "relu" | "tanh" | "sigmoid";

/** Options for {@link linear}. */
export interface LinearOpOptions {
  /** Applied after the bias add (default none). */
  activation?: LinearActivation | null;
}

const ACTIVATIONS = ["silu", "gelu", "relu", "tanh", "sigmoid"] as const;
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

function taped(inputs: readonly Tensor[]): boolean {
  const tapes = _autodiffState.activeTapes;
  return tapes.length > 0 && inputs.some((t) => tapes.some((tp) => t._tapes?.has(tp.id)));
}

/**
 * A fully connected layer, `act(x·wᵀ + b)`, in PyTorch layout: `x [..., in]`, `w [out, in]`,
 * `b [out]` (optional), result `[..., out]`. Matches `act(add(matmul(x, w, {transB: true}),
 * b))` but runs as one matmul whose epilogue adds the bias and applies the activation.
 * Differentiable in both modes. relu, tanh and sigmoid take their derivative from the
 * output, so they stay one op under a tape. silu and gelu need the pre-activation
 * z = x·wᵀ + b: under a tape they run as two ops (matmul + bias, then the activation, whose
 * rule reads the stored z), because recomputing z in the rule costs a matmul per layer,
 * which measured slower than the unfused layer; outside a tape (sampling, forward-mode jvp)
 * they are one op and the jvp rule recomputes z.
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
  // Under a tape, an activation whose derivative needs z (silu, gelu) splits into
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
      return [
        need[0] === false ? null : matmul(dz, w),
        need[1] === false ? null : matmul(dz2, x2, { transA: true }),
        ...(bias ? [need[2] === false ? null : reduce("sum", dz2, [0])] : []),
      ];
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
