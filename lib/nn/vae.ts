/**
 * @file A small MLP variational autoencoder (VAE) for flattened images, the autoencoder of
 * latent flow matching (seed 001's "advanced usage": train the flow in the autoencoder's
 * latent space instead of pixel space). MLP rather than convolutional on purpose: on a CPU
 * WebGPU adapter a 784 → 512 → 256 MLP trains in minutes, while this engine's Conv2d would
 * make every step several times slower, and 28×28 Fashion-MNIST reconstructs well enough
 * from 16 numbers without convolutions.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { reshape } from "../ops/ops.ts";
import type { RandomOptions } from "../random.ts";
import { checkInt, fmtShape } from "../_util.ts";
import { Module, Sequential } from "./module.ts";
import { Activation, forwardFusingActivations, generatorOf, Linear } from "./layers.ts";

/** Options of {@linkcode VAE}. */
export interface VAEOptions extends RandomOptions {
  /** Input width (784 for 28×28 images; inputs [B, ...] are flattened to it). */
  inputDim: number;
  /** Latent width (default 16). */
  latentDim?: number;
  /** Encoder hidden widths (default [512, 256]); the decoder mirrors them. */
  hidden?: readonly number[];
}

/** Linear/ReLU pairs through `sizes` (a ReLU after every Linear), as one Sequential. */
function reluStack(sizes: readonly number[], opts: RandomOptions): Sequential {
  const layers: Module[] = [];
  for (let i = 0; i + 1 < sizes.length; i++) {
    layers.push(new Linear(sizes[i]!, sizes[i + 1]!, opts), new Activation("relu"));
  }
  return new Sequential(layers);
}

/**
 * A Gaussian-encoder VAE with MLPs: `encoder` (Linear + ReLU through `hidden`), heads
 * `fc_mu` and `fc_logvar` giving μ and log σ² of q(z | x), and a mirrored `decoder` whose last
 * Linear ends in tanh, so reconstructions lie in [−1, 1] like the training pixels.
 * `encode(x)` is μ, the deterministic code used downstream (flow matching, clustering);
 * `decode(z)` maps codes back to images [B, inputDim].
 *
 * Parameter names (safetensors keys, PyTorch `nn.Sequential` numbering): `encoder.0.*`,
 * `encoder.2.*`, …, `fc_mu.*`, `fc_logvar.*`, `decoder.0.*`, …, `decoder.{2·len(hidden)}.*`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn } from "../../mod.ts";
 * const vae = new nn.VAE({ inputDim: 784, latentDim: 8, hidden: [32, 16], seed: 0 });
 * const x = randn([3, 1, 28, 28], { seed: 1 });
 * const mu = vae.encode(x);
 * assert.deepEqual(mu.shape, [3, 8]);
 * const y = await vae.decode(mu).data();
 * assert.equal(y.length, 3 * 784);
 * assert.ok(y.every((v) => v >= -1 && v <= 1)); // tanh output
 * assert.deepEqual([...vae.namedParameters().keys()].slice(0, 3), ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight"]);
 * ```
 */
export class VAE extends Module {
  /** Input width. */
  readonly inputDim: number;
  /** Latent width. */
  readonly latentDim: number;
  /** Encoder hidden widths. */
  readonly hidden: readonly number[];
  /** Input → last hidden width (Linear, ReLU, …). */
  readonly encoder: Sequential;
  /** Last hidden width → μ. */
  readonly fcMu: Linear;
  /** Last hidden width → log σ². */
  readonly fcLogvar: Linear;
  /** Latent → input width (Linear, ReLU, …, Linear; tanh applied in `decode`). */
  readonly decoder: Sequential;
  /** Create a VAE; the options are described on the class and its options type. */
  constructor(opts: VAEOptions) {
    super();
    this.inputDim = checkInt("inputDim", opts.inputDim, 1);
    this.latentDim = checkInt("latentDim", opts.latentDim ?? 16, 1);
    const hidden = [...(opts.hidden ?? [512, 256])];
    if (hidden.length < 1) throw new RangeError("Expected at least one hidden layer");
    hidden.forEach((h, i) => checkInt(`hidden[${i}]`, h, 1));
    this.hidden = hidden;
    // One stream for every layer, in registration order: the same seed gives the same VAE.
    const g = { generator: generatorOf(opts) };
    this.encoder = this.module("encoder", reluStack([this.inputDim, ...hidden], g));
    const last = hidden.at(-1)!;
    this.fcMu = this.module("fc_mu", new Linear(last, this.latentDim, g));
    this.fcLogvar = this.module("fc_logvar", new Linear(last, this.latentDim, g));
    const back = [this.latentDim, ...hidden.toReversed()];
    const dec = reluStack(back, g).layers;
    this.decoder = this.module(
      "decoder",
      new Sequential([...dec, new Linear(back.at(-1)!, this.inputDim, g)]),
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
  /** μ and log σ² of q(z | x), each [B, latentDim]. */
  posterior(x: Tensor): { mu: Tensor; logvar: Tensor } {
    const h = forwardFusingActivations(this.encoder.layers, this.flat(x));
    return { mu: this.fcMu.forward(h), logvar: this.fcLogvar.forward(h) };
  }
  /** The code of `x`: the posterior mean μ [B, latentDim]. */
  encode(x: Tensor): Tensor {
    const h = forwardFusingActivations(this.encoder.layers, this.flat(x));
    return this.fcMu.forward(h);
  }
  /** Images [B, inputDim] in [−1, 1] from codes z [B, latentDim]. */
  decode(z: Tensor): Tensor {
    if (z.rank !== 2 || z.shape[1] !== this.latentDim) {
      throw new RangeError(
        `Expected codes [B, ${this.latentDim}] but found ${fmtShape(z.shape)}`,
      );
    }
    const layers = this.decoder.layers, out = layers.at(-1) as Linear;
    return out.forward(forwardFusingActivations(layers.slice(0, -1), z), "tanh");
  }
  /**
   * The training forward pass with the reparameterisation z = μ + exp(½ log σ²)·ε for given
   * noise `eps` [B, latentDim]: the reconstruction and the posterior's parameters.
   */
  forward(x: Tensor, eps: Tensor): { recon: Tensor; mu: Tensor; logvar: Tensor } {
    const { mu, logvar } = this.posterior(x);
    const z = mu.add(logvar.mul(0.5).exp().mul(eps));
    return { recon: this.decode(z), mu, logvar };
  }
}
