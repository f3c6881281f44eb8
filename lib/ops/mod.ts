/**
 * @file The op vocabulary users call: the primitives and arithmetic of lib/tensor.ts, the
 * composites of ops.ts, fusion, `logSumExpAdd`, `selfAttention`, `layerNormModulate`, `gatedResidual` and `linear`.
 * @module
 */
export * from "./ops.ts";
export { fused } from "../tensor.ts";
export { Fx, fx } from "../ir.ts";
export { fusedGroups } from "./fused.ts";
export { logSumExpAdd, type LogSumExpAddOptions } from "./lse.ts";
export { selfAttention, selfAttentionComposite, type SelfAttentionOptions } from "./attention.ts";
export { layerNormModulate, layerNormModulateComposite } from "./layernorm.ts";
export { gatedResidual, gatedResidualComposite } from "./gated.ts";
export {
  feedForward,
  type FeedForwardOptions,
  linear,
  type LinearActivation,
  type LinearOpOptions,
} from "./linear.ts";
