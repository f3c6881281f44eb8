/**
 * @file `linear`: act(x·wᵀ + b) as one primitive. On a backend with `matmulEpilogue` (both
 * built-in ones) the bias add and activation run as the matmul stores its output, so a
 * hidden layer is one dispatch instead of three.
 * @module
 */
import { _autodiffState, attachRules, backendOf, Tensor, tidy } from "../tensor.ts";
import { binary, broadcastTo, matmul, reduce, reshape, unary } from "./prims.ts";
import { fused } from "./fused.ts";
import { checkChoice, fmtShape } from "../_util.ts";

/** Activations {@link linear} can fuse into the matmul epilogue. */
export type LinearActivation = "silu" | "gelu" | "relu" | "tanh" | "sigmoid";

/** Options for {@link linear}. */
export interface LinearOptions {
  /** Applied after the bias add (default none). */
  activation?: LinearActivation | null;
}

const ACTIVATIONS = ["silu", "gelu", "relu", "tanh", "sigmoid"] as const;
const INV_SQRT_2PI = 0.3989422804014327;

/**
 * d act / dz times `g`, from the pre-activation `z` (or, for relu/tanh/sigmoid, the output
 * `y`, which saves recomputing z). One fused kernel when the backend has them; plain
 * differentiable primitives otherwise. Same formulas as the unary ops' own rules.
 */
function actGrad(act: LinearActivation, g: Tensor, z: () => Tensor, y: Tensor): Tensor {
  const useFused = !!g.backend.fused;
  switch (act) {
    case "relu":
      return useFused
        ? fused([g, y], (g, y) => g.mul(y.un("gtScalar", 0)))[0]!
        : binary("mul", g, unary("gtScalar", y, 0));
    case "tanh":
      return useFused
        ? fused([g, y], (g, y) => g.mul(y.square().affine(-1, 1)))[0]!
        : binary("mul", g, unary("affine", unary("square", y), -1, 1));
    case "sigmoid":
      return useFused
        ? fused([g, y], (g, y) => g.mul(y.mul(y.affine(-1, 1))))[0]!
        : binary("mul", g, binary("mul", y, unary("affine", y, -1, 1)));
    case "silu": {
      const x = z();
      if (useFused) {
        return fused([g, x], (g, x) => {
          const s = x.un("sigmoid");
          return g.mul(s.add(x.mul(s).mul(s.affine(-1, 1))));
        })[0]!;
      }
      const s = unary("sigmoid", x);
      // s + z·s·(1 − s)
      return binary(
        "mul",
        g,
        binary("add", s, binary("mul", binary("mul", x, s), unary("affine", s, -1, 1))),
      );
    }
    case "gelu": {
      const x = z();
      if (useFused) {
        return fused([g, x], (g, x) => {
          const cdf = x.affine(Math.SQRT1_2, 0).un("erf").affine(0.5, 0.5);
          const pdf = x.square().affine(-0.5, 0).un("exp").affine(INV_SQRT_2PI, 0);
          return g.mul(cdf.add(x.mul(pdf)));
        })[0]!;
      }
      // Φ(z) + z·φ(z)
      const cdf = unary("affine", unary("erf", unary("affine", x, Math.SQRT1_2, 0)), 0.5, 0.5);
      const pdf = unary(
        "affine",
        unary("exp", unary("affine", unary("square", x), -0.5, 0)),
        INV_SQRT_2PI,
        0,
      );
      return binary("mul", g, binary("add", cdf, binary("mul", x, pdf)));
    }
  }
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
 * import { linear, tensor } from "../../mod.ts";
 * const x = tensor([[1, 2]]), w = tensor([[1, 0], [0, -1], [1, 1]]);
 * const y = linear(x, w, tensor([0, 1, -4]), { activation: "relu" });
 * console.log(await y.data()); // relu([1, -1, -1]) = [1, 0, 0]
 * ```
 */
export function linear(
  x: Tensor,
  w: Tensor,
  b?: Tensor | null,
  opts: LinearOptions = {},
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
  if (!be.matmulEpilogue) return tidy(() => (act ? unary(act, pre()) : pre()));
  // Under a tape, silu and gelu split into epilogue(bias) then the unary op, whose vjp reads
  // the stored z: recomputing z in the backward pass (one more matmul per layer) made a
  // training step of a 3×256 VelocityMLP slower than the unfused three ops on lavapipe
  // (59 vs 40 ms at batch 1024). relu, tanh and sigmoid need only the output and stay fused.
  if ((act === "silu" || act === "gelu") && taped(inputs)) {
    return unary(act, linear(x, w, bias, {}));
  }
  const rows = x.shape.slice(0, -1).reduce((p, q) => p * q, 1);
  // x is contiguous, so its leading axes flatten into the m rows of one 2-D matmul.
  const s = be.matmulEpilogue(
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
    bias ? bias.storage : null,
    act,
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
