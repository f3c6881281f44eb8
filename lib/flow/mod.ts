/**
 * @file lib/flow: probability paths and time samplers, minibatch OT couplings, ODE/SDE
 * samplers and classifier-free guidance, written against Tensor ops only (both backends).
 * Convention: t = 0 is noise, t = 1 is data, x_t = (1 − t)·x0 + t·x1, target x1 − x0.
 * @module
 */
export {
  broadcastTime,
  cfmLoss,
  type CfmLossOptions,
  type CfmLossResult,
  interpolate,
  interpolateLipman,
  type InterpolateOptions,
  PATH_TYPES,
  type PathCoefficients,
  pathCoefficients,
  type PathSample,
  type PathType,
  sampleTimes,
  type SampleTimesOptions,
  TIME_SCHEDULES,
  type TimeSchedule,
  type VelocityFn,
} from "./paths.ts";
export { type Coupling, type CouplingMethod, otCouple, type OtCoupleOptions } from "./ot.ts";
export {
  integrate,
  type IntegrateOptions,
  type IntegrateResult,
  SAMPLER_METHODS,
  type SamplerMethod,
} from "./samplers.ts";
export {
  classifierFreeGuidance,
  guidanceIntervalFromReference,
  type GuidanceOptions,
} from "./guidance.ts";
export {
  disposeRecorded,
  type Generated,
  type GenerateOptions,
  generateSamples,
} from "./generate.ts";
export {
  type AnchorTerm,
  bootstrapDtBase,
  type LocalityTerm,
  SHORTCUT_EPS,
  type ShortcutBatch,
  type ShortcutConfig,
  shortcutDtBase,
  shortcutLoss,
  type ShortcutLossOptions,
  type ShortcutLossResult,
  shortcutSample,
  type ShortcutSampleOptions,
  shortcutTargets,
  type ShortcutTargetsOptions,
  type ShortcutVelocityFn,
} from "./shortcut.ts";
export { type Anchors, labelAnchors, type NearestCentroid, nearestCentroid } from "./anchors.ts";
