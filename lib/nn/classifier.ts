/**
 * @file A small MLP image classifier (flattened pixels → hidden ReLU layers → logits). Its
 * penultimate activations are the feature space of the toolkit's Fréchet distance (FD) for
 * Fashion-MNIST samples; see lib/train/classifier.ts.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { reshape } from "../ops/ops.ts";
import type { RandomOptions } from "../random.ts";
import { checkInt, fmtShape } from "../_util.ts";
import { Module } from "./module.ts";
import { type ActivationName, forwardFusingActivations, MLP } from "./layers.ts";

/** Options of {@linkcode MLPClassifier}. */
export interface MLPClassifierOptions extends RandomOptions {
  /** Input width (e.g. 784 for 28×28 images; inputs [B, ...] are flattened to it). */
  inputDim: number;
  /** Hidden widths (default [256, 128]); the last is the feature width. */
  hidden?: readonly number[];
  /** Number of classes. */
  numClasses: number;
  /** Activation (default "relu"). */
  activation?: ActivationName;
}

/**
 * An MLP classifier: inputDim → hidden… → numClasses. `features(x)` are the activations of
 * the last hidden layer; `forward(x)` the logits. Parameter names: `net.0.weight`, …,
 * `net.{2·len(hidden)}.bias`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const c = new nn.MLPClassifier({ inputDim: 784, hidden: [32, 16], numClasses: 10, seed: 0 });
 * const x = randn([3, 1, 28, 28], { seed: 1 });
 * assert.deepEqual(c.forward(x).shape, [3, 10]);
 * assert.deepEqual(c.features(x).shape, [3, 16]);
 * assert.equal(c.featureDim, 16);
 * ```
 */
export class MLPClassifier extends Module {
  /** Input width. */
  readonly inputDim: number;
  /** Classes. */
  readonly numClasses: number;
  /** Width of `features`. */
  readonly featureDim: number;
  /** The layers (Linear, activation, …, Linear). */
  readonly net: MLP;
  /** Create an MLPClassifier; the options are described on the class and its options type. */
  constructor(opts: MLPClassifierOptions) {
    super();
    this.inputDim = checkInt("inputDim", opts.inputDim, 1);
    this.numClasses = checkInt("numClasses", opts.numClasses, 2);
    const hidden = [...(opts.hidden ?? [256, 128])];
    if (hidden.length < 1) throw new RangeError("Expected at least one hidden layer");
    hidden.forEach((h, i) => checkInt(`hidden[${i}]`, h, 1));
    this.featureDim = hidden.at(-1)!;
    this.net = this.module(
      "net",
      new MLP([this.inputDim, ...hidden, this.numClasses], opts.activation ?? "relu", opts),
    );
  }
  /** x [B, ...] as rows [B, inputDim]. */
  private flat(x: Tensor): Tensor {
    const per = x.shape.slice(1).reduce((a, b) => a * b, 1);
    if (x.rank < 2 || per !== this.inputDim) {
      throw new RangeError(
        `Expected inputs [B, ...] with ${this.inputDim} values per row but found ${
          fmtShape(x.shape)
        }`,
      );
    }
    return x.rank === 2 ? x : reshape(x, [x.shape[0]!, this.inputDim]);
  }
  /** Activations of the last hidden layer [B, featureDim]. */
  features(x: Tensor): Tensor {
    const layers = this.net.layers;
    return forwardFusingActivations(layers.slice(0, layers.length - 1), this.flat(x));
  }
  /** Logits [B, numClasses]. */
  forward(x: Tensor): Tensor {
    return this.net.forward(this.flat(x));
  }
}
