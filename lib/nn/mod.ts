/**
 * @file Neural-network modules with PyTorch names and layouts: the `Module` base class,
 * layers, DiT/SiT, and the toy velocity networks. Re-exported from `mod.ts` as `nn`.
 * @module
 */
export { type LoadStateDictOptions, Module, Sequential, type StateDictValue } from "./module.ts";
export {
  Activation,
  type ActivationName,
  ACTIVATIONS,
  applyActivation,
  Conv2d,
  type Conv2dOptions,
  Dropout,
  type DropoutOptions,
  Embedding,
  FeedForward,
  GELU,
  geluTanh,
  generatorOf,
  initConstant,
  initNormal,
  initUniform,
  initXavierUniform,
  LabelEmbedder,
  type LabelEmbedderOptions,
  LayerNorm,
  type LayerNormOptions,
  Linear,
  type LinearOptions,
  MLP,
  selu,
  SiLU,
  TimestepEmbedder,
  type TimestepEmbedderOptions,
  timestepEmbedding,
  type TimestepEmbeddingOptions,
} from "./layers.ts";
export {
  AdaLNZeroBlock,
  type AdaLNZeroBlockOptions,
  type AttentionOptions,
  DiT,
  type DiTOptions,
  FinalLayer,
  get2dSinCosPosEmbed,
  modulate,
  MultiheadSelfAttention,
  PatchEmbed,
  patchify,
  SiT,
  unpatchify,
} from "./transformer.ts";
export { DiTWithProjector, type DiTWithProjectorOptions } from "./repa.ts";
export {
  compareStateDict,
  detectArchitecture,
  type DetectedArchitecture,
  exportTorchStateDict,
  flipTimeConvention,
  formatStateDictReport,
  type ImportOptions,
  importTorchStateDict,
  loadTorchStateDict,
  StateDictError,
  type StateDictReport,
  type TimeConvention,
  TORCH_DTYPES,
  type TorchEntry,
  type TorchStateDict,
} from "./convert.ts";
export {
  AdaLNMLP,
  type AdaLNMLPOptions,
  AdaLNZero,
  VelocityMLP,
  type VelocityMLPOptions,
} from "./velocity.ts";
export { FlowMapMLP, type FlowMapMLPOptions } from "./flowmap.ts";
export { MLPClassifier, type MLPClassifierOptions } from "./classifier.ts";
export { VAE, type VAEOptions } from "./vae.ts";
