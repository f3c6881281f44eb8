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
} from "./fit.ts";
export { lockRunDir, removeStaleTemps, type RunLock, RunLockedError } from "./lock.ts";
export { MetricWindow, type NonFinite, type WindowSnapshot, type WindowState } from "./window.ts";
export { streamsOf } from "./state.ts";
export { openTrainingRun, type TrainingRun, type TrainingRunSpec } from "./run.ts";
