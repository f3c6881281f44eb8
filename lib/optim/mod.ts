/**
 * @file Optimizers (SGD, Adam, AdamW, RAdam, Muon), gradient clipping, EMA and learning-rate
 * schedules. Re-exported from `mod.ts` as `optim`.
 * @module
 */
export {
  Adam,
  type AdamOptions,
  AdamW,
  clipGradNorm,
  type ClippedGrads,
  Muon,
  muonMask,
  type MuonOptions,
  newtonSchulz,
  Optimizer,
  type OptimizerState,
  type OptimizerStateInput,
  RAdam,
  SGD,
  type SGDOptions,
} from "./optimizers.ts";
export {
  EMA,
  type EMAOptions,
  type EMAState,
  type EMAStateInput,
  type ParamSource,
  type StateTensor,
} from "./ema.ts";
export {
  constant,
  cosine,
  type CosineOptions,
  inverseSqrt,
  linearWarmup,
  type LrSchedule,
} from "./schedules.ts";
