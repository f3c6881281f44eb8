/**
 * @file Fused scaled-dot-product self-attention over timm's packed `qkv` projection:
 * `selfAttention` runs the backend's `attention` (one kernel on WebGPU) and, under a tape, its
 * `attentionBackward` (two kernels) from the saved log-sum-exp; `selfAttentionComposite` is
 * the same function written with transposes, matmuls and softmax, the reference the fused op
 * is tested against, and what the fused op's forward-mode and higher-order rules are built
 * from (so every derivative order stays exact).
 * @module
 */
import {
  attachRules,
  backendOf,
  binary,
  differentiating,
  matmul,
  reduce,
  reshape,
  Tensor,
  transpose,
  unary,
} from "../tensor.ts";
import { softmax, split, stack } from "./ops.ts";
import { checkInt, checkNumber, fmtShape } from "../_util.ts";

/** Options of {@linkcode selfAttention}. */
export interface SelfAttentionOptions {
  /** Score scale (default 1/√d_head, as timm and `F.scaled_dot_product_attention`). */
  scale?: number;
}

interface Geometry {
  b: number;
  n: number;
  heads: number;
  d: number;
  scale: number;
}

function geometry(qkv: Tensor, numHeads: number, opts: SelfAttentionOptions): Geometry {
  if (!(qkv instanceof Tensor) || qkv.rank !== 3) {
    throw new RangeError(
      `Expected self-attention input qkv to be a [B, N, 3·dim] tensor but found ${
        qkv instanceof Tensor ? fmtShape(qkv.shape) : typeof qkv
      }`,
    );
  }
  const heads = checkInt("numHeads", numHeads, 1);
  const [b, n, w] = qkv.shape as [number, number, number];
  if (w % (3 * heads) !== 0 || w === 0) {
    throw new RangeError(
      `Expected the last axis of qkv ${fmtShape(qkv.shape)} to be 3·numHeads·d_head ` +
        `(numHeads ${heads})`,
    );
  }
  const d = w / (3 * heads);
  const scale = checkNumber("attention scale", opts.scale ?? 1 / Math.sqrt(d));
  return { b, n, heads, d, scale };
}

// [B, N, 3, H, d] → q, k, v as [B, H, N, d] (copies), as timm.
function splitHeads(qkv: Tensor, g: Geometry): [Tensor, Tensor, Tensor] {
  const t = transpose(reshape(qkv, [g.b, g.n, 3, g.heads, g.d]), [2, 0, 3, 1, 4]);
  return split(t, [1, 1, 1], 0).map((x) => reshape(x, [g.b, g.heads, g.n, g.d])) as [
    Tensor,
    Tensor,
    Tensor,
  ];
}

// [B, H, N, d] → [B, N, H·d].
function mergeHeads(x: Tensor, g: Geometry): Tensor {
  return reshape(transpose(x, [0, 2, 1, 3]), [g.b, g.n, g.heads * g.d]);
}

// softmax(scale · q·kᵀ) over keys, [B, H, N, N].
function probs(q: Tensor, k: Tensor, scale: number): Tensor {
  return softmax(scaled(matmul(q, k, { transB: true }), scale), -1);
}

const scaled = (x: Tensor, s: number) => unary("affine", x, s, 0);

/**
 * @internal Whether `selfAttention` runs the fused backend op (default) or the composite;
 * tests and A/B benchmarks switch it off to compare both in one process.
 */
export const _fusedAttention = { enabled: true };

/**
 * Multi-head self-attention from the packed projection, composed of primitives: `qkv
 * [B, N, 3·H·d]` (timm's `[B, N, 3, H, d]`) → the heads concatenated `[B, N, H·d]`, each head
 * `softmax(scale · Q·Kᵀ)·V`. The reference for {@linkcode selfAttention} (same values up to f32
 * rounding); it materialises the `[B, H, N, N]` probabilities and four transposed copies.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { selfAttentionComposite, tensor } from "../../mod.ts";
 * // One head, two tokens with d = 1: q = k = v = the token value; scale 1.
 * const qkv = tensor([[[0, 0, 1], [1, 1, 3]]]); // token 0: q 0, k 0, v 1; token 1: q 1, k 1, v 3
 * const o = await selfAttentionComposite(qkv, 1, { scale: 1 }).data();
 * // token 1 weighs keys 0 and 1 by softmax([0, 1]): (1 + 3e) / (1 + e)
 * assert.ok(Math.abs(o[1]! - (1 + 3 * Math.E) / (1 + Math.E)) < 1e-6);
 * assert.equal(o[0], 2); // token 0: scores [0, 0], the mean of v
 * ```
 */
export function selfAttentionComposite(
  qkv: Tensor,
  numHeads: number,
  opts: SelfAttentionOptions = {},
): Tensor {
  const g = geometry(qkv, numHeads, opts);
  const [q, k, v] = splitHeads(qkv, g);
  return mergeHeads(matmul(probs(q, k, g.scale), v), g);
}

/**
 * Multi-head self-attention from timm's packed projection in one fused op: `qkv [B, N, 3·H·d]`
 * (q, k, v of each token and head, `[B, N, 3, H, d]`) → the heads concatenated `[B, N, H·d]`,
 * each head `softmax(scale · Q·Kᵀ)·V` over the N tokens. Equal to
 * {@linkcode selfAttentionComposite} within f32 rounding, but without the `[B, H, N, N]`
 * probability matrix or the transposed copies: one kernel forward (online softmax, keeping
 * each row's log-sum-exp) and two backward (FlashAttention-2's recomputation from it), batched
 * over batch × heads. Differentiable in both modes; forward mode and derivatives of the
 * backward (a gradient under an outer tape) use the composite formulas.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { grad, randn, selfAttention, selfAttentionComposite } from "../../mod.ts";
 * const qkv = randn([2, 5, 3 * 8], { seed: 0 }); // 2 heads of width 4, 5 tokens
 * const a = await selfAttention(qkv, 2).data(), b = await selfAttentionComposite(qkv, 2).data();
 * a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) < 1e-5));
 * const loss = (f: typeof selfAttention) => (x: typeof qkv) => f(x, 2).square().sum();
 * const ga = await grad(loss(selfAttention))(qkv).data();
 * const gb = await grad(loss(selfAttentionComposite))(qkv).data();
 * ga.forEach((v, i) => assert.ok(Math.abs(v - gb[i]!) < 1e-4));
 * ```
 */
export function selfAttention(
  qkv: Tensor,
  numHeads: number,
  opts: SelfAttentionOptions = {},
): Tensor {
  const g = geometry(qkv, numHeads, opts);
  if (!_fusedAttention.enabled) return selfAttentionComposite(qkv, numHeads, opts);
  const be = backendOf([qkv]);
  const [os, ls] = be.attention(qkv.storage, g.b, g.n, g.heads, g.d, g.scale);
  const out = Tensor._fromStorage(os, [g.b, g.n, g.heads * g.d], be);
  const lse = Tensor._fromStorage(ls, [g.b, g.heads, g.n], be);
  if (!differentiating([qkv])) {
    lse.dispose();
    return out;
  }
  // Under a tape, lse lives as long as the graph (valueAndGrad's scope frees it with the
  // other intermediates).
  attachRules(out, [qkv], {
    vjp: (gy) => {
      // A gradient that is itself differentiated (an outer tape tracks these) needs rules for
      // the backward: take the composite's, whose every op has them.
      if (differentiating([qkv, out, gy])) return [compositeVjp(qkv, gy, g)];
      const dx = be.attentionBackward(
        qkv.storage,
        out.storage,
        lse.storage,
        gy.storage,
        g.b,
        g.n,
        g.heads,
        g.d,
        g.scale,
      );
      return [Tensor._fromStorage(dx, qkv.shape, be)];
    },
    jvp: ([t]) => compositeJvp(qkv, t!, g),
  });
  return out;
}

// dQKV from the composite formulas: with P = softmax(scale·QKᵀ), dV = Pᵀ·G, dP = G·Vᵀ,
// dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = scale·dS·K, dK = scale·dSᵀ·Q.
function compositeVjp(qkv: Tensor, gy: Tensor, g: Geometry): Tensor {
  const [q, k, v] = splitHeads(qkv, g);
  const gh = transpose(reshape(gy, [g.b, g.n, g.heads, g.d]), [0, 2, 1, 3]);
  const p = probs(q, k, g.scale);
  const dv = matmul(p, gh, { transA: true });
  const dp = matmul(gh, v, { transB: true });
  const ds = binary(
    "mul",
    p,
    binary("sub", dp, reduce("sum", binary("mul", dp, p), [3], true)),
  );
  const dq = scaled(matmul(ds, k), g.scale);
  const dk = scaled(matmul(ds, q, { transA: true }), g.scale);
  // [3, B, H, N, d] → [B, N, 3, H, d]
  const all = transpose(stack([dq, dk, dv], 0), [1, 3, 0, 2, 4]);
  return reshape(all, qkv.shape);
}

// The tangent: tS = scale·(tQ·Kᵀ + Q·tKᵀ), tP = P ⊙ (tS − rowsum(P ⊙ tS)), tO = tP·V + P·tV.
function compositeJvp(qkv: Tensor, t: Tensor, g: Geometry): Tensor {
  const [q, k, v] = splitHeads(qkv, g);
  const [tq, tk, tv] = splitHeads(t, g);
  const p = probs(q, k, g.scale);
  const ts = scaled(
    binary("add", matmul(tq, k, { transB: true }), matmul(q, tk, { transB: true })),
    g.scale,
  );
  const tp = binary("mul", p, binary("sub", ts, reduce("sum", binary("mul", p, ts), [3], true)));
  return mergeHeads(binary("add", matmul(tp, v), matmul(p, tv)), g);
}
