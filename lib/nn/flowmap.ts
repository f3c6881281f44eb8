/**
 * @file `FlowMapMLP`: the flow-map network φ(s, t, x) of seed 004's checkerboard experiment,
 * an MLP on [x, s, t] (4 hidden layers of 256 with SiLU by default) with the reproduction's
 * PyTorch parameter names (`net.0.weight`, `net.2.weight`, …, `net.8.bias`).
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { concat, reshape, stopGradient } from "../ops/ops.ts";
import { linear, type LinearActivation } from "../ops/linear.ts";
import type { RandomOptions } from "../random.ts";
import { checkChoice, checkInt, fmtShape } from "../_util.ts";
import { Module, Sequential } from "./module.ts";
import { Activation, generatorOf, Linear } from "./layers.ts";

/** Options of `FlowMapMLP`. */
export interface FlowMapMLPOptions extends RandomOptions {
  /** Data dimension (the input x and the output φ). */
  dim: number;
  /** Hidden width (default 256). */
  hidden?: number;
  /** Hidden layers (default 4: [x, s, t] → 256 → 256 → 256 → 256 → dim). */
  depth?: number;
  /** Activation after each hidden layer (default "silu"). */
  activation?: LinearActivation;
}

const ACTS = ["silu", "gelu", "relu", "tanh", "sigmoid"] as const;

/**
 * φ(s, t, x) as an MLP on the concatenation [x, s, t]: `depth` hidden Linear layers, each
 * followed by the activation (fused into its matmul), then a Linear to `dim`. `forward` is the
 * student; `teacher` is the same network with detached weights (the current parameters with no
 * gradient, so its forward pass is not recorded on a tape).
 *
 * @example
 * ```ts
 * import { nn, randn, rand } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const net = new nn.FlowMapMLP({ dim: 2, hidden: 32, depth: 2, seed: 0 });
 * const x = randn([5, 2], { seed: 1 }), s = rand([5], { seed: 2 }), t = rand([5], { seed: 3 });
 * assert.deepEqual(net.forward(x, s, t).shape, [5, 2]);
 * assert.deepEqual([...net.namedParameters().keys()].slice(0, 2), ["net.0.weight", "net.0.bias"]);
 * assert.deepEqual([...await net.teacher(x, s, t).data()], [...await net.forward(x, s, t).data()]);
 * ```
 */
export class FlowMapMLP extends Module {
  /** Data dimension. */
  readonly dim: number;
  /** Linear, act, …, Linear (`net.0`, `net.1`, …). */
  readonly net: Sequential;
  /** The hidden activation. */
  readonly activation: LinearActivation;
  readonly #linears: Linear[];
  /** Create a FlowMapMLP; the options are described on the class and its options type. */
  constructor(opts: FlowMapMLPOptions) {
    super();
    this.dim = checkInt("dim", opts.dim, 1);
    const hidden = checkInt("hidden", opts.hidden ?? 256, 1);
    const depth = checkInt("depth", opts.depth ?? 4, 1);
    this.activation = checkChoice("flow-map MLP activation", opts.activation ?? "silu", ACTS);
    const g = generatorOf(opts);
    const r = g ? { generator: g } : {};
    const all: Module[] = [];
    this.#linears = [];
    for (let i = 0; i <= depth; i++) {
      const lin = new Linear(i === 0 ? this.dim + 2 : hidden, i === depth ? this.dim : hidden, r);
      this.#linears.push(lin);
      all.push(lin);
      if (i < depth) all.push(new Activation(this.activation));
    }
    this.net = this.module("net", new Sequential(all));
  }

  #input(x: Tensor, s: Tensor, t: Tensor): Tensor {
    if (x.rank !== 2 || x.shape[1] !== this.dim) {
      throw new RangeError(`Expected x of shape [B, ${this.dim}] but found ${fmtShape(x.shape)}`);
    }
    const b = x.shape[0]!;
    for (const [n, v] of [["s", s], ["t", t]] as const) {
      if (v.size !== b) {
        throw new RangeError(
          `Expected ${n} of shape [${b}] to match x but found ${fmtShape(v.shape)}`,
        );
      }
    }
    return concat([x, reshape(s, [b, 1]), reshape(t, [b, 1])], 1);
  }

  #run(h: Tensor, detach: boolean): Tensor {
    const L = this.#linears;
    for (let i = 0; i < L.length; i++) {
      const m = L[i]!;
      const w = detach ? stopGradient(m.weight) : m.weight;
      const b = m.bias ? (detach ? stopGradient(m.bias) : m.bias) : null;
      h = linear(h, w, b, { activation: i + 1 < L.length ? this.activation : null });
    }
    return h;
  }

  /** φ(s, t, x): x [B, dim], s [B], t [B] → [B, dim]. */
  forward(x: Tensor, s: Tensor, t: Tensor): Tensor {
    return this.#run(this.#input(x, s, t), false);
  }

  /** φ with detached weights and inputs: the self-distillation teacher (no gradient flows). */
  teacher(x: Tensor, s: Tensor, t: Tensor): Tensor {
    return this.#run(stopGradient(this.#input(stopGradient(x), s, t)), true);
  }
}
