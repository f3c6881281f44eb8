/**
 * @file The trainer of SV's toy experiments (gmm_exp.py, `deno task gmm`): the AdaLN-Zero
 * MLP regressing the CFM, STF or StableVM target on a Gaussian mixture with an exact field.
 *
 * StableVM, by default as SV's toy does it (gmm_exp.py `stable_vm`): every step draws a fresh
 * reference batch of `refBatchSize` mixture samples, regresses samples picked from it, and
 * uses the stable target at every t. `reference: "bank"` keeps one FIFO bank refilled by each
 * data batch instead (checkpointed as trainer state), and `splitT` < 1 uses x1 − x0 above it
 * (SV's image recipe). STF uses a fresh reference batch (the minibatch plus new samples).
 *
 * `vectorField: "score"` regresses SV's score parameterisation by default (`scoreTarget:
 * "sv"`): −E[x0 | x_t] = (1−t)∇log p_t, unweighted — SV's stable_target divides by τ, not τ².
 * `scoreTarget: "exact"` regresses ∇log p_t itself, whose target −x0/(1−t) has variance
 * 1/(1−t)², so that loss is weighted by (1−t)² (ε-prediction weighting).
 * @module
 */
import { checkStepFits, mlpStepSize } from "./budget.ts";
import type { Tensor } from "../tensor.ts";
import { add, concat, mean, mul, reshape, square, sub, tensor } from "../ops/mod.ts";
import * as nn from "../nn/mod.ts";
import { Adam, EMA } from "../optim/mod.ts";
import type { GaussianMixture } from "../data/gmm.ts";
import {
  type FieldKind,
  MemoryBank,
  plainTarget,
  stableVmTarget,
  stfTarget,
} from "../flow/stablevm.ts";
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
  /** The score's parameterisation: SV's −E[x0 | x_t] ("sv", default) or ∇log p_t ("exact"). */
  scoreTarget?: "sv" | "exact";
  /** StableVM references: a fresh mixture batch each step ("fresh", SV's toy) or a FIFO "bank". */
  reference?: "fresh" | "bank";
  /** StableVM: the stable target for t ≤ splitT, x1 − x0 above (default 1: at every t). */
  splitT?: number;
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
  /** The FIFO bank (StableVM targets with `reference: "bank"` only). */
  readonly bank: MemoryBank | null;
}

/**
 * The {@linkcode FieldKind} a GMM-toy config regresses.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gmmFieldKind } from "../../mod.ts";
 * assert.equal(gmmFieldKind({ vectorField: "score" }), "noise");
 * ```
 */
export function gmmFieldKind(c: Pick<GmmToyConfig, "vectorField" | "scoreTarget">): FieldKind {
  if (c.vectorField === "velocity") return "velocity";
  return c.scoreTarget === "exact" ? "score" : "noise";
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
  const kind = gmmFieldKind(c);
  const splitT = c.splitT ?? 1;
  // The StableVM target weighs every reference against every row: a [batch, ref] matrix.
  checkStepFits((k) => {
    const s = mlpStepSize({ hidden: 32, depth: 4, width: d, batch: k["--batch-size"]! });
    const pairs = k["--batch-size"]! * k["--ref-batch-size"]!;
    return { ...s, activations: s.activations + 6 * pairs, largest: Math.max(s.largest, pairs) };
  }, { "--batch-size": B, "--ref-batch-size": c.refBatchSize });
  const model = new nn.AdaLNMLP({ dim: d, hidden: 32, blocks: 4, dropout: 0.1, seed: c.seed + 2 });
  model.train();
  const stable = c.exp.startsWith("stable_vm");
  const fifo = stable && c.reference === "bank";
  const bank = fifo
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
      let x1: Tensor;
      const zeros = new Int32Array(B);
      // SV's toy: a fresh reference batch each step, and the regressed samples are its rows.
      const refs = stable && !fifo
        ? new MemoryBank({ numClasses: 1, capacityPerClass: c.refBatchSize, dim: d })
        : bank;
      if (refs) {
        const data = gmm.sampleHost(fifo ? B : c.refBatchSize, gen);
        refs.add(data.x, new Int32Array(data.x.length / d)); // fills (or refills) the references
        x1 = refs.sample(zeros, gen);
      } else x1 = tensor(gmm.sampleHost(B, gen).x, [B, d]);
      const t = gen.uniform([B], tEps, 1 - tEps);
      const tc = reshape(t, [B, 1]);
      const x0 = gen.normal([B, d]);
      const xt = add(mul(x0, sub(1, tc)), mul(x1, tc));
      let target: Tensor;
      if (c.exp === "cfm") target = plainTarget(x1, x0, tc, kind);
      else if (c.exp === "stf") {
        const extra = gmm.sample(Math.max(1, c.refBatchSize - B), gen).x;
        target = stfTarget(xt, t, concat([x1, extra], 0), kind);
      } else {
        target = stableVmTarget(refs!, zeros, { x: x1, eps: x0, xt, t }, {
          efficient,
          kind,
          splitT,
        });
      }
      const err = square(sub(model.forward(xt, t), target));
      return { loss: kind === "score" ? mean(mul(err, square(sub(1, tc)))) : mean(err) };
    },
  };
}
