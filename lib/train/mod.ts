/**
 * @file lib/train: the one training loop (`fit`) every trainer uses, the run setup around it
 * (`openTrainingRun`: fresh run or resume with the run's own schedule), the run-directory
 * lock, and the metric window that detects NaN/Inf without per-step readbacks.
 *
 * A trainer supplies `model`, `optimizer`, optional `ema`, a differentiable
 * `loss(ctx) → { loss, metrics? }`, and optionally `prepare(ctx)` (async host work before
 * the loss), `state` (extra tensors to checkpoint), `emaModel` (a model holding the EMA
 * weights for bootstrap targets) and `sample(ctx)` (figures with the EMA weights).
 * @module
 */
export {
  fit,
  type FitContext,
  type FitOptions,
  type FitResult,
  type LossOutput,
  NonFiniteError,
  type SampleContext,
  type StepContext,
  type StepMetrics,
  type Trainer,
  type TrainerState,
  TrainingStoppedError,
} from "./fit.ts";
export { lockRunDir, removeStaleTemps, type RunLock, RunLockedError } from "./lock.ts";
export { MetricWindow, type NonFinite, type WindowSnapshot, type WindowState } from "./window.ts";
export { streamsOf } from "./state.ts";
export { configureTracing, type StepMode, StepTracer, type StepTracerOptions } from "./trace.ts";
export {
  checkStepFits,
  ditStepSize,
  mlpStepSize,
  type SizeLimits,
  sizeLimits,
  stepBytes,
  type StepSize,
} from "./budget.ts";
export { openTrainingRun, type TrainingRun, type TrainingRunSpec } from "./run.ts";
export { type RunEnvironment, runEnvironment } from "./env.ts";
export {
  buildCfmModel,
  CFM_DATASETS,
  CFM_MODELS,
  type CfmDataset,
  type CfmModel,
  type CfmModelConfig,
  cfmModelFromCheckpoint,
  type CfmNet,
  checkCfmModelFits,
  type LoadedCfmCheckpoint,
  readCfmCheckpoint,
  sampleCfmModel,
  velocityOf,
} from "./cfm_model.ts";
export {
  loadRepaEncoder,
  type RepaEncoder,
  type RepaSettings,
  repaTerm,
  withRepaTerm,
} from "./repa.ts";
export {
  buildOptimizer,
  CFM_OPTIMIZERS,
  type CfmBatch,
  type CfmData,
  cfmData,
  type CfmDataOptions,
  type CfmOptimizer,
  type CfmTrainer,
  cfmTrainer,
  type CfmTrainerConfig,
} from "./cfm.ts";
export {
  bankState,
  checkStableVmModel,
  embeddedRing,
  type HostTrainerState,
  type LabelledSet,
  loadLabelledNpz,
  stableVmField,
  type StableVmNet,
  type StableVmTrainer,
  stableVmTrainer,
  type StableVmTrainerConfig,
} from "./stablevm.ts";
export {
  GMM_EXPERIMENTS,
  gmmFieldKind,
  type GmmToyConfig,
  type GmmToyTrainer,
  gmmToyTrainer,
} from "./gmm.ts";
export {
  EVAL_METRICS,
  type EvalMetric,
  type EvalRecord,
  evaluateCfm,
  evaluateImageField,
  type EvaluateOptions,
  type ImageFieldOptions,
  type ImageFieldScores,
  type ImageScoreOptions,
  type ImageScores,
  referenceData,
  scoreImages,
} from "./evaluate.ts";
export {
  buildFlowMapModel,
  FLOWMAP_TASK,
  type FlowMapModelConfig,
  flowMapModelFromCheckpoint,
  flowMapOf,
  type FlowMapTrainer,
  flowMapTrainer,
  type FlowMapTrainerConfig,
  type LoadedFlowMapCheckpoint,
  locateFlowMapCheckpoint,
  readFlowMapCheckpoint,
} from "./flowmap.ts";
export {
  evaluateFewStep,
  evaluateFewStepImages,
  type FewStepEval,
  type ImageFewStepEval,
  type ImageFewStepOptions,
  type ShortcutTerms,
  type ShortcutTrainer,
  shortcutTrainer,
  type ShortcutTrainerConfig,
  shortcutVelocityOf,
  TOY_LABEL_CLASSES,
  toyLabels,
} from "./shortcut.ts";
export {
  type AccuracyResult,
  buildClassifier,
  CLASSIFIER_TASK,
  classifierAccuracy,
  classifierFeatures,
  type ClassifierModelConfig,
  classifierPredict,
  classifierTrainer,
  type ClassifierTrainerConfig,
  crossEntropy,
  featureStats,
  imageRows,
  loadClassifier,
  type LoadedClassifier,
  shiftImages,
} from "./classifier.ts";
export {
  AUTOENCODER_TASK,
  type AutoencoderModelConfig,
  autoencoderTrainer,
  type AutoencoderTrainerConfig,
  buildAutoencoder,
  checkAutoencoderData,
  decodeCodes,
  encodeImages,
  type LatentNormalisation,
  latentStats,
  loadAutoencoder,
  type LoadedAutoencoder,
  reconstructionMse,
  vaeLoss,
  type VaeLossTerms,
} from "./autoencoder.ts";
export {
  decodeLatents,
  latentCfmData,
  latentLabelledSet,
  type LatentRunConfig,
  type LatentSpec,
  latentSpecOf,
  openLatentAutoencoder,
  samplesAsData,
  withLatents,
} from "./latent.ts";
