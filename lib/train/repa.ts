/**
 * @file REPA for the image trainers (`--use-proj-loss`): the encoder (the toolkit's own
 * Fashion-MNIST classifier, `deno task train:classifier`, whose penultimate features are the
 * alignment targets), the checks that it fits the data and the DiT before anything is
 * written, and the projection term L = coeff · projLoss(encoder(x1), projector(h_depth), t)
 * with the VA-REPA schedule of SV's train.py (`--proj-weight-schedule`, `--proj-tau`,
 * `--proj-k`, `--proj-coeff`).
 *
 * The classifier gives one feature vector per image; every token of the projected hidden
 * state aligns to it (z broadcast over tokens: REPA's per-patch loss with a global target).
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { reshape } from "../ops/mod.ts";
import type * as nn from "../nn/mod.ts";
import { projLoss, type ProjWeightSchedule } from "../flow/repa.ts";
import { loadClassifier } from "./classifier.ts";
import type { LossOutput } from "./fit.ts";

/** The REPA settings of a run (flat, as they sit in config.json). */
export interface RepaSettings {
  /** Whether the projection loss is on. */
  useProjLoss: boolean;
  /** The encoder checkpoint (a `train:classifier` run or `.safetensors`). */
  projEncoder: string | null;
  /** Blocks before the projector (REPA `--encoder-depth`). */
  encoderDepth: number;
  /** The projector MLP's hidden width. */
  projectorDim: number;
  /** VA-REPA schedule. */
  projWeightSchedule: ProjWeightSchedule;
  /** Split point τ (SV's time). */
  projTau: number;
  /** Sigmoid sharpness k. */
  projK: number;
  /** Coefficient of the projection term (SV 0.5). */
  projCoeff: number;
}

/** The encoder a REPA run aligns to: features [B, featureDim] of images [B, ...]. */
export interface RepaEncoder {
  /** The checkpoint read. */
  path: string;
  /** The classifier (eval mode); only `features` is used. */
  model: nn.MLPClassifier;
}

/**
 * Read the `--proj-encoder` classifier and check, before training, that it takes the data's
 * images (`dataShape`, e.g. [1, 28, 28]) and that the run's DiT can carry a projector at
 * `encoderDepth`; `featureDim` (a resumed run's projector output) must equal the encoder's
 * feature width. Errors are `RangeError`s naming the flag and the two shapes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadRepaEncoder } from "../../mod.ts";
 * await assert.rejects(
 *   loadRepaEncoder(null, { dataShape: [1, 28, 28], depth: 4, encoderDepth: 2 }),
 *   /--use-proj-loss needs --proj-encoder/,
 * );
 * ```
 */
export async function loadRepaEncoder(
  path: string | null,
  fit: { dataShape: readonly number[]; depth: number; encoderDepth: number; featureDim?: number },
): Promise<RepaEncoder> {
  if (!path) {
    throw new RangeError(
      "--use-proj-loss needs --proj-encoder <classifier run or .safetensors>: the features " +
        "to align to (train one with deno task train:classifier)",
    );
  }
  if (fit.dataShape.length !== 3) {
    throw new RangeError(
      `--use-proj-loss aligns a DiT's hidden tokens, so it needs images [C, H, W] but the ` +
        `data have shape [${fit.dataShape}]`,
    );
  }
  if (!Number.isInteger(fit.encoderDepth) || fit.encoderDepth < 1 || fit.encoderDepth > fit.depth) {
    throw new RangeError(
      `Expected --encoder-depth to be an integer in [1, ${fit.depth}] (the DiT's blocks) but ` +
        `found ${fit.encoderDepth}`,
    );
  }
  const enc = await loadClassifier(path).catch((e: Error) => {
    throw new RangeError(e.message.replace(/^--classifier /, "--proj-encoder "), { cause: e });
  });
  const per = fit.dataShape.reduce((a, b) => a * b, 1);
  const fail = (why: string) => {
    enc.model.dispose();
    throw new RangeError(`--proj-encoder ${enc.path}: ${why}`);
  };
  if (enc.model.inputDim !== per) {
    fail(
      `the encoder takes ${enc.model.inputDim} values per image but the data's images ` +
        `[${fit.dataShape}] have ${per}`,
    );
  }
  if (fit.featureDim !== undefined && fit.featureDim !== enc.model.featureDim) {
    fail(
      `its features are ${enc.model.featureDim} wide but the run's projector outputs ` +
        `${fit.featureDim} (the encoder it was trained with)`,
    );
  }
  return { path: enc.path, model: enc.model };
}

/**
 * The weighted REPA term of one batch: coeff · projLoss(z, z̃, t) with z = encoder features
 * of the clean images `x1` [B, ...] (no gradient), z̃ = the DiT's projected tokens
 * [B, T, D] (from `forwardProjected`), and t [B] the batch's times (t = 1 data). Returns the
 * unweighted loss too, for `training/loss_proj`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, repaTerm, tensor } from "../../mod.ts";
 * const enc = new nn.MLPClassifier({ inputDim: 16, hidden: [8, 5], numClasses: 3, seed: 0 });
 * const z = randn([2, 4, 5], { seed: 1 });
 * const r = repaTerm(enc, randn([2, 1, 4, 4], { seed: 2 }), z, tensor([0.5, 0.9]), {
 *   projWeightSchedule: "hard", projTau: 0.7, projK: 20, projCoeff: 0.5 });
 * const l = await r.loss.item();
 * assert.ok(l >= -1 && l <= 1);
 * assert.ok(Math.abs((await r.weighted.item()) - 0.5 * l) < 1e-6);
 * ```
 */
export function repaTerm(
  encoder: nn.MLPClassifier,
  x1: Tensor,
  projected: Tensor,
  t: Tensor,
  s: Pick<RepaSettings, "projWeightSchedule" | "projTau" | "projK" | "projCoeff">,
): { loss: Tensor; weighted: Tensor } {
  const B = x1.shape[0]!;
  const z = reshape(encoder.features(x1), [B, 1, encoder.featureDim]);
  const { loss } = projLoss(z, projected, t, {
    schedule: s.projWeightSchedule,
    tau: s.projTau,
    k: s.projK,
  });
  return { loss, weighted: loss.mul(s.projCoeff) };
}

/**
 * A trainer's loss with REPA's term added: `flow + projCoeff·proj` (see {@linkcode repaTerm}),
 * logging both parts as `training/loss_flow` and `training/loss_proj`. Unset schedule settings
 * take REPA's defaults (hard, τ 0.7, k 20, coefficient 0.5).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { nn, randn, tensor, withRepaTerm } from "../../mod.ts";
 * const enc = new nn.MLPClassifier({ inputDim: 16, hidden: [8, 5], numClasses: 3, seed: 0 });
 * const out = withRepaTerm(tensor(2), enc, randn([2, 1, 4, 4], { seed: 2 }),
 *   randn([2, 4, 5], { seed: 1 }), tensor([0.5, 0.9]), {});
 * const proj = await out.metrics!["training/loss_proj"]!.item();
 * assert.ok(Math.abs((await out.loss.item()) - (2 + 0.5 * proj)) < 1e-6);
 * ```
 */
export function withRepaTerm(
  flow: Tensor,
  encoder: nn.MLPClassifier,
  x1: Tensor,
  projected: Tensor,
  t: Tensor,
  s: Partial<Pick<RepaSettings, "projWeightSchedule" | "projTau" | "projK" | "projCoeff">>,
): LossOutput & { metrics: Record<string, Tensor> } {
  const p = repaTerm(encoder, x1, projected, t, {
    projWeightSchedule: s.projWeightSchedule ?? "hard",
    projTau: s.projTau ?? 0.7,
    projK: s.projK ?? 20,
    projCoeff: s.projCoeff ?? 0.5,
  });
  return {
    loss: flow.add(p.weighted),
    metrics: { "training/loss_flow": flow, "training/loss_proj": p.loss },
  };
}
