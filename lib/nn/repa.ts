/**
 * @file A DiT carrying REPA's projector (REPA/SV `SiT(use_projector=True)`): an MLP on the
 * tokens after `encoderDepth` blocks that maps them to an encoder's feature width, trained by
 * the projection loss (`projLoss` in lib/flow) and ignored when sampling.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { reshape } from "../ops/ops.ts";
import { checkInt } from "../_util.ts";
import { Sequential } from "./module.ts";
import { MLP } from "./layers.ts";
import { DiT, type DiTOptions } from "./transformer.ts";

/** Options of {@linkcode DiTWithProjector}: the DiT's, plus the projector's. */
export interface DiTWithProjectorOptions extends DiTOptions {
  /** Blocks before the projector taps the tokens (REPA `--encoder-depth`), in [1, depth]. */
  encoderDepth: number;
  /** Hidden width of the projector MLP (REPA `projector_dim`, 2048 there). */
  projectorDim: number;
  /** Output width: the encoder's feature width (REPA `z_dims`). */
  featureDim: number;
}

/**
 * A DiT with REPA's projector `projectors.0` = Linear(hidden, p) → SiLU → Linear(p, p) → SiLU
 * → Linear(p, featureDim) (PyTorch names `projectors.0.{0,2,4}.*`, as REPA's `build_mlp`).
 * `forward` is the DiT's (the projector does not change samples); `forwardProjected` also
 * returns the projected tokens [N, T, featureDim] of the hidden state after `encoderDepth`
 * blocks.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, tensor } from "../../mod.ts";
 * const net = new nn.DiTWithProjector({ inputSize: 4, patchSize: 2, inChannels: 1,
 *   hiddenSize: 8, depth: 2, numHeads: 2, numClasses: 0, seed: 0,
 *   encoderDepth: 1, projectorDim: 16, featureDim: 5 });
 * const { out, projected } = net.forwardProjected(randn([3, 1, 4, 4], { seed: 1 }), tensor([0.1, 0.5, 0.9]));
 * assert.deepEqual([out.shape, projected.shape], [[3, 1, 4, 4], [3, 4, 5]]);
 * assert.ok([...net.namedParameters().keys()].includes("projectors.0.4.weight"));
 * ```
 */
export class DiTWithProjector extends DiT {
  /** Blocks before the projector. */
  readonly encoderDepth: number;
  /** Output width of the projector. */
  readonly featureDim: number;
  /** `projectors` (one MLP, as REPA's ModuleList for one encoder). */
  readonly projectors: Sequential;
  /** Create a DiTWithProjector; the options are described on the class and its options type. */
  constructor(opts: DiTWithProjectorOptions) {
    super(opts);
    const hidden = this.config.hiddenSize;
    this.encoderDepth = checkInt("encoderDepth", opts.encoderDepth, 1, this.config.depth);
    const p = checkInt("projectorDim", opts.projectorDim, 1);
    this.featureDim = checkInt("featureDim", opts.featureDim, 1);
    // A stream apart from the DiT's, so adding a projector leaves the DiT's initial weights
    // as they are without it.
    const seed = opts.seed === undefined ? undefined : opts.seed + 7717;
    this.projectors = this.module(
      "projectors",
      new Sequential([new MLP([hidden, p, p, this.featureDim], "silu", { seed })]),
    );
  }
  /** Velocity and projected tokens [N, T, featureDim] (arguments as `forward`). */
  forwardProjected(
    x: Tensor,
    t: Tensor,
    y?: Tensor,
    forceDrop?: Tensor,
  ): { out: Tensor; projected: Tensor } {
    const { out, hidden } = this.forwardWithHidden(this.encoderDepth, x, t, y, forceDrop);
    const [n, T, h] = hidden.shape as [number, number, number];
    const z = this.projectors.at(0) as MLP;
    return { out, projected: reshape(z.forward(reshape(hidden, [n * T, h])), [n, T, -1]) };
  }
}
