/**
 * @file lib/metrics: sample-based distances (histogram KL, W2, MMD) and trajectory
 * straightness. NFE is reported by the samplers (`integrate`).
 * @module
 */
export {
  histogramKL,
  type HistogramKLOptions,
  type MmdOptions,
  mmdRbf,
  type Samples,
  w2,
  type W2Options,
} from "./distances.ts";
export { straightness, type StraightnessResult } from "./straightness.ts";
export {
  frechetDistance,
  frechetDistanceOf,
  type GaussianStats,
  gaussianStats,
  sqrtmPsd,
  type SymmetricEigen,
  symmetricEigen,
} from "./frechet.ts";
