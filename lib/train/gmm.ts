/**
 * @file The trainer of SV's toy experiments (gmm_exp.py, `deno task gmm`): the AdaLN-Zero
 * MLP regressing the CFM, STF or StableVM target on a Gaussian mixture with an exact field.
 *
 * In this unconditional toy, StableVM's bank is one FIFO of `refBatchSize` entries refilled
 * by each data batch (the regressed samples are drawn from it; checkpointed as trainer
 * state); its stable target is used for t ≤ 0.5 and x1 − x0 above. STF uses a fresh
 * reference batch (the minibatch plus new samples) at every t. The score target −x0/(1−t)
 * has variance 1/(1−t)², so the score loss is weighted by (1−t)² (ε-prediction weighting)
 * to stay bounded; the velocity loss is unweighted, as in SV.
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { add, concat, mean, mul, reshape, square, sub, tensor } from "../ops/mod.ts";
import * as nn from "../nn/mod.ts";
import { Adam, EMA } from "../optim/mod.ts";
import type { GaussianMixture } from "../data/gmm.ts";
import { MemoryBank, stableVmTarget, stfTarget } from "../flow/stablevm.ts";
import type { StepContext, Trainer } from "./fit.ts";
import { bankState } from "./stablevm.ts";

/**
 * `--exp` values of the GMM toy.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { GMM_EXPERIMENTS } from "../../mod.ts";
 * assert.ok(GMM_EXPERIMENTS.includes("stable_vm_efficient"));
 * ```
 */
export const GMM_EXPERIMENTS = ["cfm", "stf", "stable_vm", "stable_vm_efficient"] as const;

/** Settings of {@linkcode gmmToyTrainer}. */
export interface GmmToyConfig {
  /** Which target. */
  exp: typeof GMM_EXPERIMENTS[number];
  /** Learn the velocity or the score. */
  vectorField: "velocity" | "score";
  /** Batch size. */
  batchSize: number;
  /** STF reference batch / StableVM bank size. */
  refBatchSize: number;
  /** Adam learning rate. */
  learningRate: number;
  /** EMA decay. */
  emaDecay: number;
  /** Seed; the model is initialised from `seed + 2`. */
  seed: number;
}

/** A GMM-toy trainer (with its bank for the StableVM targets). */
export interface GmmToyTrainer extends Trainer<nn.AdaLNMLP> {
  /** The FIFO bank (StableVM targets only). */
  readonly bank: MemoryBank | null;
}

/**
 * The GMM-toy trainer: one step draws a data batch from the mixture, then t, x0 and the
 * experiment's target, all from the run's stream.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { createRun, fit, GaussianMixture, Generator, gmmToyTrainer } from "../../mod.ts";
 * const dir = await Deno.makeTempDir();
 * const cfg = { exp: "stable_vm" as const, vectorField: "velocity" as const, batchSize: 16,
 *   refBatchSize: 32, learningRate: 1e-3, emaDecay: 0.99, seed: 0 };
 * const t = gmmToyTrainer(cfg, GaussianMixture.ring({ numModes: 4 }));
 * const run = await createRun("gmm", { outputDir: dir, config: cfg });
 * const r = await fit(t, { run, generator: new Generator(1), maxSteps: 3, logEvery: 3, progress: false });
 * assert.ok(Number.isFinite(r.loss));
 * t.model.dispose(); t.optimizer.dispose(); t.ema!.dispose();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function gmmToyTrainer(c: GmmToyConfig, gmm: GaussianMixture): GmmToyTrainer {
  const d = gmm.dim, B = c.batchSize, tEps = 1e-4;
  const kind = c.vectorField;
  const model = new nn.AdaLNMLP({ dim: d, hidden: 32, blocks: 4, dropout: 0.1, seed: c.seed + 2 });
  model.train();
  const bank = c.exp.startsWith("stable_vm")
    ? new MemoryBank({ numClasses: 1, capacityPerClass: c.refBatchSize, globalCapacity: 1, dim: d })
    : null;
  const efficient = c.exp === "stable_vm_efficient";
  return {
    model,
    optimizer: new Adam({ lr: c.learningRate }),
    ema: new EMA(model, { decay: c.emaDecay }),
    bank,
    state: bank ? bankState(bank) : undefined,
    loss(ctx: StepContext<nn.AdaLNMLP>) {
      const gen = ctx.generator;
      const data = gmm.sampleHost(B, gen);
      let x1: Tensor;
      const zeros = new Int32Array(B);
      if (bank) {
        bank.add(data.x, zeros); // the data batch refills the bank; samples come from it
        x1 = bank.sample(zeros, gen);
      } else x1 = tensor(data.x, [B, d]);
      const t = gen.uniform([B], tEps, 1 - tEps);
      const tc = reshape(t, [B, 1]);
      const x0 = gen.normal([B, d]);
      const xt = add(mul(x0, sub(1, tc)), mul(x1, tc));
      let target: Tensor;
      if (c.exp === "cfm") {
        target = kind === "velocity" ? sub(x1, x0) : mul(x0, -1).div(sub(1, tc));
      } else if (c.exp === "stf") {
        const extra = gmm.sample(Math.max(1, c.refBatchSize - B), gen).x;
        target = stfTarget(xt, t, concat([x1, extra], 0), kind);
      } else target = stableVmTarget(bank!, zeros, { x: x1, eps: x0, xt, t }, { efficient, kind });
      const err = square(sub(model.forward(xt, t), target));
      return { loss: kind === "score" ? mean(mul(err, square(sub(1, tc)))) : mean(err) };
    },
  };
}
